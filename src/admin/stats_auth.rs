//! Access control of a stats listener, per request: the Basic credentials of the
//! `Authorization` header checked against the listener's userlists (`stats auth`, `userlist`),
//! its access rules (`stats auth`, `stats http-request allow|deny|auth`) and its `stats admin`
//! conditions, evaluated as HAProxy does: the first rule whose condition matches decides, and
//! the page's server actions are allowed when any `stats admin` condition matches.

use std::net::{IpAddr, SocketAddr};

use sha_crypt::{PasswordVerifier, ShaCrypt};

use super::http::same_token;
use crate::config::StatsListener;
use crate::config::acl::Sample;
use crate::config::stats_access::{Action, Cond, Password, Userlist};

/// What the access rules say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// 403.
    Deny,
    /// 401, asking for credentials in this realm.
    Auth(String),
}

/// One request as the rules see it.
pub struct Request<'a> {
    listener: &'a StatsListener,
    peer: Option<IpAddr>,
    /// `(user, password)` from `Authorization: Basic`.
    credentials: Option<(String, String)>,
}

impl<'a> Request<'a> {
    /// A request from `peer` with the given `Authorization` header value.
    pub fn new(
        listener: &'a StatsListener,
        peer: Option<IpAddr>,
        authorization: Option<&[u8]>,
    ) -> Self {
        Request {
            listener,
            peer,
            credentials: authorization.and_then(basic_credentials),
        }
    }

    /// The access rules' verdict.
    pub fn verdict(&self) -> Verdict {
        for rule in &self.listener.rules {
            if rule.cond.as_ref().is_none_or(|c| self.matches(c)) {
                return match &rule.action {
                    Action::Allow => Verdict::Allow,
                    Action::Deny => Verdict::Deny,
                    Action::Auth { realm } => Verdict::Auth(realm.clone()),
                };
            }
        }
        Verdict::Allow
    }

    /// Whether the page's server actions are allowed (`stats admin`).
    pub fn admin(&self) -> bool {
        self.listener.admin.iter().any(|c| self.matches(c))
    }

    fn matches(&self, cond: &Cond) -> bool {
        cond.matches(self)
    }
}

/// A stats request as its conditions read it: stats conditions take only `src` among the
/// address fetches (see `keywords::acl`), so the peer's port is never read.
impl Sample for Request<'_> {
    fn src(&self) -> Option<SocketAddr> {
        self.peer.map(|ip| SocketAddr::new(ip, 0))
    }

    fn dst(&self) -> Option<SocketAddr> {
        None
    }

    fn nbsrv(&self, _backend: &str) -> Option<i64> {
        None
    }

    fn srv_is_up(&self, _backend: &str, _server: &str) -> Option<bool> {
        None
    }

    fn http_auth(&self, list: &str, groups: Option<&[String]>) -> bool {
        let Some((user, pass)) = &self.credentials else {
            return false;
        };
        let Some(list) = self.listener.userlists.iter().find(|u| u.name == list) else {
            return false;
        };
        authenticate(list, user, pass)
            && groups.is_none_or(|gs| gs.iter().any(|g| list.in_group(user, g)))
    }
}

/// Whether `user` is in `list` with password `pass`.
fn authenticate(list: &Userlist, user: &str, pass: &str) -> bool {
    let Some(u) = list.users.iter().find(|u| u.name == user) else {
        return false;
    };
    match &u.password {
        Password::Insecure(expected) => same_token(pass.as_bytes(), expected.as_bytes()),
        Password::Crypt(hash) => ShaCrypt::default()
            .verify_password(pass.as_bytes(), hash.as_str())
            .is_ok(),
        Password::None => false,
    }
}

/// `(user, password)` of `Basic BASE64(user:password)`; the scheme is case-insensitive.
fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Standard base64 (RFC 4648, with or without padding).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let data = text.trim_end_matches('=').as_bytes();
    if data.len() % 4 == 1 || text.len() - data.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(text: &str) -> StatsListener {
        let c = crate::config::parse_sources(&[("t.cfg", text)]).expect("valid");
        c.stats[0].clone()
    }

    fn basic(user_pass: &str) -> String {
        // Encoded by hand for the cases below.
        match user_pass {
            "a:b" => "Basic YTpi".into(),
            "a:x" => "Basic YTp4".into(),
            "u:p:q" => "basic dTpwOnE=".into(),
            other => panic!("no encoding for {other}"),
        }
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("YTpi").as_deref(), Some(&b"a:b"[..]));
        assert_eq!(base64_decode("dTpwOnE=").as_deref(), Some(&b"u:p:q"[..]));
        assert_eq!(base64_decode("dTpwOnE").as_deref(), Some(&b"u:p:q"[..]));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("YT*i"), None);
    }

    #[test]
    fn stats_auth_asks_until_a_listed_user_comes() {
        let l = listener(
            "listen st\nmode http\nbind 127.0.0.1:1\nstats enable\nstats auth a:b\nstats auth u:p:q\n",
        );
        let ask = Verdict::Auth("HAProxy Statistics".into());
        assert_eq!(Request::new(&l, None, None).verdict(), ask);
        assert_eq!(
            Request::new(&l, None, Some(basic("a:x").as_bytes())).verdict(),
            ask
        );
        assert_eq!(
            Request::new(&l, None, Some(basic("a:b").as_bytes())).verdict(),
            Verdict::Allow
        );
        assert_eq!(
            Request::new(&l, None, Some(basic("u:p:q").as_bytes())).verdict(),
            Verdict::Allow
        );
    }

    #[test]
    fn admin_follows_its_conditions() {
        let l = listener(
            "listen st\nmode http\nbind 127.0.0.1:1\nstats enable\nstats admin if { src 10.0.0.0/8 } !{ src 10.1.0.0/16 }\nstats admin unless TRUE\n",
        );
        let at = |ip: &str| Request::new(&l, ip.parse().ok(), None).admin();
        assert!(at("10.2.3.4"));
        assert!(!at("10.1.3.4"));
        assert!(!at("127.0.0.1"));
        let local = listener(
            "listen st\nmode http\nbind 127.0.0.1:1\nstats enable\nstats admin if LOCALHOST\n",
        );
        assert!(Request::new(&local, "127.0.0.2".parse().ok(), None).admin());
        assert!(Request::new(&local, "::1".parse().ok(), None).admin());
        assert!(!Request::new(&local, "192.0.2.1".parse().ok(), None).admin());
    }

    #[test]
    fn http_request_rules_decide_in_order_with_groups_and_hashes() {
        let hash = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
        let l = listener(&format!(
            "userlist L\ngroup ops users a\nuser a password {hash}\nuser u insecure-password p:q\n\
             listen st\nmode http\nbind 127.0.0.1:1\nstats enable\n\
             stats http-request deny if {{ src 192.0.2.0/24 }}\n\
             stats http-request auth realm Ops unless {{ http_auth(L) }}\n\
             stats admin if {{ http_auth_group(L) ops }}\n"
        ));
        // `a:secret`, checked against the SHA-256 crypt hash.
        let a = b"Basic YTpzZWNyZXQ=".as_slice();
        let peer = "127.0.0.1".parse().ok();
        assert_eq!(Request::new(&l, peer, Some(a)).verdict(), Verdict::Allow);
        assert!(Request::new(&l, peer, Some(a)).admin());
        let u = basic("u:p:q");
        assert_eq!(
            Request::new(&l, peer, Some(u.as_bytes())).verdict(),
            Verdict::Allow
        );
        assert!(!Request::new(&l, peer, Some(u.as_bytes())).admin());
        assert_eq!(
            Request::new(&l, peer, Some(basic("a:b").as_bytes())).verdict(),
            Verdict::Auth("Ops".into())
        );
        assert_eq!(
            Request::new(&l, "192.0.2.7".parse().ok(), Some(a)).verdict(),
            Verdict::Deny
        );
    }
}
