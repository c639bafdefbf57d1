//! Proxy ids (`iid` in `show stat`, `HAPROXY_PROXY_ID`, `show servers state`'s `be_id`),
//! assigned once when the configuration is built, the way HAProxy 2.6 does it: a proxy with
//! `id N` keeps N (two proxies with the same id are refused); every other proxy, in
//! declaration order, takes the first id not given to anyone at or after a cursor that starts
//! at 1 and moves one step for every proxy — also for one with its own id, and for HAProxy's
//! internal `GLOBAL` proxy (id 0), which exists from the first global `stats` line on and
//! sits among the proxies where that line was read. A `listen` is one proxy: both halves
//! share its id. Stats listeners take an id too, though they are not listed.

use std::collections::HashSet;

use crate::config::draft::{Diags, ProxyDraft};

/// The id of each of `proxies` (same order). `cli_proxy_at` is how many proxies were read
/// before the internal `GLOBAL` proxy appeared, if it did.
pub(super) fn assign(
    proxies: &[ProxyDraft],
    cli_proxy_at: Option<usize>,
    diags: &mut Diags,
) -> Vec<u32> {
    let mut used: HashSet<u32> = HashSet::new();
    for (i, p) in proxies.iter().enumerate() {
        let Some((id, loc)) = &p.id else { continue };
        if !used.insert(*id) {
            let first = proxies[..i]
                .iter()
                .find(|q| q.id.as_ref().is_some_and(|(other, _)| other == id));
            let (kind, name, at) = first.map_or(("proxy", "", &p.loc), |q| {
                (q.kind.keyword(), &*q.name, &q.loc)
            });
            diags.error(
                loc,
                format!(
                    "{} '{}' reuses id {id} of {kind} '{name}' (declared at {at}): proxy ids must be unique",
                    p.kind.keyword(),
                    p.name
                ),
            );
        }
    }
    let mut next: u32 = 1;
    let mut ids = Vec::with_capacity(proxies.len());
    for (i, p) in proxies.iter().enumerate() {
        if cli_proxy_at == Some(i) {
            next = next.saturating_add(1);
        }
        match &p.id {
            Some((id, _)) => ids.push(*id),
            None => {
                while used.contains(&next) {
                    next = next.saturating_add(1);
                }
                used.insert(next);
                ids.push(next);
            }
        }
        next = next.saturating_add(1);
    }
    ids
}

#[cfg(test)]
mod tests {
    use crate::config::testing::parse;

    /// `(name, iid)` of every TCP proxy half, frontends first.
    fn ids(text: &str) -> Vec<(String, u32)> {
        let config = parse(text).expect("valid config");
        config
            .frontends
            .iter()
            .map(|f| (format!("fe {}", f.name), f.id))
            .chain(
                config
                    .backends
                    .iter()
                    .map(|b| (format!("be {}", b.name), b.id)),
            )
            .collect()
    }

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    const HEAD: &str =
        "defaults\n mode tcp\n timeout connect 1s\n timeout client 1s\n timeout server 1s\n";

    #[test]
    fn automatic_ids_count_from_one_without_a_stats_socket() {
        let text = format!(
            "{HEAD}frontend f\n bind :7001\n default_backend b\nbackend b\n server s 127.0.0.1:1\nlisten l\n bind :7002\n server s 127.0.0.1:1\n"
        );
        assert_eq!(
            ids(&text),
            pairs(&[("fe f", 1), ("fe l", 3), ("be b", 2), ("be l", 3)])
        );
    }

    #[test]
    fn the_stats_socket_takes_a_place_where_global_declares_it() {
        let text = format!(
            "frontend f\n mode tcp\n timeout client 1s\n bind :7001\n default_backend b\nglobal\n stats socket /tmp/x.sock\n{HEAD}backend b\n server s 127.0.0.1:1\n"
        );
        assert_eq!(ids(&text), pairs(&[("fe f", 1), ("be b", 3)]));
    }

    #[test]
    fn explicit_ids_are_kept_and_still_move_the_cursor() {
        // HAProxy 2.6: f=2 (GLOBAL took a step), b1=3 (own), l=4, stats=5, b2=1 (own), b3=7.
        let text = format!(
            "global\n stats socket /tmp/x.sock\n{HEAD}frontend f\n bind :7001\n default_backend b1\nbackend b1\n id 3\n server s 127.0.0.1:1\nlisten l\n bind :7002\n server s 127.0.0.1:1\nlisten stats\n mode http\n bind :7003\n stats enable\nbackend b2\n id 1\n server s 127.0.0.1:1\nbackend b3\n server s 127.0.0.1:1\n"
        );
        assert_eq!(
            ids(&text),
            pairs(&[
                ("fe f", 2),
                ("fe l", 4),
                ("be b1", 3),
                ("be l", 4),
                ("be b2", 1),
                ("be b3", 7)
            ])
        );
    }

    #[test]
    fn automatic_ids_skip_ids_given_later() {
        let text = format!(
            "{HEAD}backend a\n server s 127.0.0.1:1\nbackend b\n server s 127.0.0.1:1\nbackend c\n id 2\n server s 127.0.0.1:1\n"
        );
        assert_eq!(ids(&text), pairs(&[("be a", 1), ("be b", 3), ("be c", 2)]));
    }

    #[test]
    fn a_duplicate_id_is_refused_where_it_is_repeated() {
        let text = format!(
            "{HEAD}backend a\n id 7\n server s 127.0.0.1:1\nbackend b\n id 7\n server s 127.0.0.1:1\n"
        );
        let errors = parse(&text).expect_err("duplicate id").join("\n");
        assert!(
            errors.contains("t.cfg:10: backend 'b' reuses id 7 of backend 'a' (declared at"),
            "{errors}"
        );
    }

    #[test]
    fn id_is_refused_in_defaults_and_must_be_positive() {
        for (line, want) in [
            (
                "defaults\n id 4\n",
                "'id' is not allowed in a 'defaults' section",
            ),
            ("backend z\n id 0\n", "has to be > 0"),
            ("backend z\n id -3\n", "has to be > 0"),
            ("backend z\n id 2147483648\n", "has to be > 0"),
            ("backend z\n id 3 4\n", "unexpected argument '4'"),
            ("backend z\n id 3\n id 4\n", "'id' given twice"),
        ] {
            let text = format!("{HEAD}{line}");
            let errors = parse(&text).expect_err(line).join("\n");
            assert!(errors.contains(want), "{line}: {errors}");
        }
    }
}
