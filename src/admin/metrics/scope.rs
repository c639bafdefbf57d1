//! What one `/metrics` scrape asks for: the `scope=` and `no-maint` parameters of its query
//! string, read as HAProxy 2.6's Prometheus exporter reads them (`promex_parse_uri`).
//!
//! `scope=` may repeat and the scopes add up; an empty `scope=` clears what the ones before it
//! asked for; `scope=*` asks for all; no `scope` at all means all. `no-maint` leaves out the
//! servers in maintenance. A `scope` without a value, an unknown scope, a `%` not followed by
//! two hex digits or a value holding a second `=` is an error (HAProxy answers 400); other
//! parameters are ignored.

/// The families a scrape prints, by HAProxy's scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrape {
    /// `global`: `haproxy_process_*` (and `rolelb_table_*`).
    pub global: bool,
    /// `frontend`: `haproxy_frontend_*`.
    pub frontend: bool,
    /// `listener`: per-listener families (rolelb has none: always empty).
    pub listener: bool,
    /// `backend`: `haproxy_backend_*` (and `rolelb_backend_*`, `rolelb_etcd_*`).
    pub backend: bool,
    /// `server`: `haproxy_server_*` (and `rolelb_server_*`, `rolelb_check_duration_seconds`).
    pub server: bool,
    /// `sticktable`: stick-table families (rolelb exports none: always empty).
    pub sticktable: bool,
    /// `no-maint`: leave out the servers in maintenance.
    pub no_maint: bool,
}

impl Default for Scrape {
    /// Everything, as a scrape without a query string.
    fn default() -> Scrape {
        Scrape::scopes(true)
    }
}

impl Scrape {
    fn scopes(on: bool) -> Scrape {
        Scrape {
            global: on,
            frontend: on,
            listener: on,
            backend: on,
            server: on,
            sticktable: on,
            no_maint: false,
        }
    }

    /// Reads a query string (the part after `?`, `None` when there is none).
    pub fn from_query(query: Option<&str>) -> Result<Scrape, String> {
        let Some(query) = query else {
            return Ok(Scrape::default());
        };
        let query = query.split('#').next().unwrap_or_default();
        let mut asked = Scrape::scopes(false);
        let mut any_scope = false;
        for param in query.split('&') {
            let (key, value) = match param.split_once('=') {
                Some((_, v)) if v.contains('=') => {
                    return Err(format!("malformed query parameter '{param}'"));
                }
                Some((k, v)) => (decode(k)?, Some(decode(v)?)),
                None => (decode(param)?, None),
            };
            match key.as_str() {
                "scope" => {
                    any_scope = true;
                    let value =
                        value.ok_or_else(|| "'scope' needs a value (scope=NAME)".to_owned())?;
                    asked.add(&value)?;
                }
                "no-maint" => asked.no_maint = true,
                _ => {}
            }
        }
        if !any_scope {
            let no_maint = asked.no_maint;
            asked = Scrape::scopes(true);
            asked.no_maint = no_maint;
        }
        Ok(asked)
    }

    fn add(&mut self, scope: &str) -> Result<(), String> {
        match scope {
            "" => {
                *self = Scrape {
                    no_maint: self.no_maint,
                    ..Scrape::scopes(false)
                }
            }
            // HAProxy looks at the first character only.
            s if s.starts_with('*') => {
                *self = Scrape {
                    no_maint: self.no_maint,
                    ..Scrape::scopes(true)
                }
            }
            "global" => self.global = true,
            "frontend" => self.frontend = true,
            "listener" => self.listener = true,
            "backend" => self.backend = true,
            "server" => self.server = true,
            "sticktable" => self.sticktable = true,
            other => {
                return Err(format!(
                    "unknown scope '{other}' (expected global, frontend, listener, backend, \
                     server, sticktable or *)"
                ));
            }
        }
        Ok(())
    }
}

/// Decodes `%XX` and `+` (a space) as HAProxy's `url_decode` does for a form; a NUL ends the
/// text, as it ends HAProxy's C string.
fn decode(text: &str) -> Result<String, String> {
    let mut out = crate::text::form_decode(text)
        .ok_or_else(|| format!("bad %-escape in query parameter '{text}'"))?;
    if let Some(nul) = out.iter().position(|&c| c == 0) {
        out.truncate(nul);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(q: &str) -> Result<[bool; 7], String> {
        Scrape::from_query(Some(q)).map(|s| {
            [
                s.global,
                s.frontend,
                s.listener,
                s.backend,
                s.server,
                s.sticktable,
                s.no_maint,
            ]
        })
    }

    const ALL: [bool; 7] = [true, true, true, true, true, true, false];
    const NONE: [bool; 7] = [false; 7];

    #[test]
    fn no_scope_means_every_scope() {
        assert_eq!(Scrape::from_query(None), Ok(Scrape::default()));
        assert_eq!(scopes(""), Ok(ALL));
        assert_eq!(scopes("foo=bar&x"), Ok(ALL));
        let mut no_maint = ALL;
        no_maint[6] = true;
        assert_eq!(scopes("no-maint"), Ok(no_maint));
    }

    #[test]
    fn scopes_add_up_and_an_empty_one_clears_those_before() {
        assert_eq!(
            scopes("scope=backend"),
            Ok([false, false, false, true, false, false, false])
        );
        assert_eq!(
            scopes("scope=global&scope=server&no-maint"),
            Ok([true, false, false, false, true, false, true])
        );
        assert_eq!(scopes("scope="), Ok(NONE));
        assert_eq!(scopes("scope=global&scope="), Ok(NONE));
        assert_eq!(
            scopes("scope=&scope=frontend"),
            Ok([false, true, false, false, false, false, false])
        );
        assert_eq!(scopes("scope=*"), Ok(ALL));
        assert_eq!(
            scopes("scope=%62ackend"),
            Ok([false, false, false, true, false, false, false])
        );
    }

    #[test]
    fn what_haproxy_refuses_is_an_error() {
        for q in [
            "scope",
            "scope=bogus",
            "scope=Backend",
            "scope=back%2",
            "scope=a=b",
            "x=%zz",
        ] {
            assert!(scopes(q).is_err(), "{q} accepted");
        }
    }
}
