//! The rolelb extension keywords of backends (SPEC section 3, "Extensions"): `role`,
//! `role-check`, `max-lag` and `role-source` (`discover` and `etcd` are in `etcd`). Each parser reads only its own line into the
//! draft; the rules that tie them together (`max-lag` needs `role replica`, `role primary`
//! needs a `role-check`...) are checked in `build` on the final backend, after inheritance,
//! because any of them may come from `defaults`.
//!
//! `role-check` lines carry passwords: no error here ever echoes a word of those lines
//! except the check kind and the keywords rolelb itself defines.

use super::{Ctx, did_you_mean};
use crate::config::draft::ProxyDraft;
use crate::config::lexer::Word;
use crate::config::model::{MaxLag, Role, RoleCheck, RoleSource};
use crate::config::units::{TimeUnit, parse_duration, parse_size};

/// `role primary|replica|any`.
pub fn role(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let role = match ctx.arg(0, "'primary', 'replica' or 'any'")? {
        "primary" => Role::Primary,
        "replica" => Role::Replica,
        "any" => Role::Any,
        // Other projects' names, so the error says what rolelb calls them.
        other @ ("master" | "leader" | "writer" | "rw") => {
            return Err(format!(
                "unknown role '{other}': rolelb calls it 'primary' (use primary, replica or any)"
            ));
        }
        other @ ("slave" | "standby" | "secondary" | "reader" | "ro") => {
            return Err(format!(
                "unknown role '{other}': rolelb calls it 'replica' (use primary, replica or any)"
            ));
        }
        other => {
            return Err(format!(
                "unknown role '{other}' (use primary, replica or any)"
            ));
        }
    };
    p.role = Some((role, ctx.loc.clone()));
    Ok(())
}

/// `role-check pgsql user U [password P] [database D]`, `role-check mysql user U [password P]`,
/// `role-check agent`.
pub fn role_check(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let kind = ctx.arg(
        0,
        "'pgsql user U [password P] [database D]', 'mysql user U [password P]' or 'agent'",
    )?;
    let rest = ctx.args.get(1..).unwrap_or_default();
    let check = match kind {
        "pgsql" => {
            let login = Login::parse("pgsql", rest, &["user", "password", "database"])?;
            RoleCheck::Pgsql {
                user: login.user("pgsql")?,
                password: login.password(),
                database: login.database,
            }
        }
        "mysql" => {
            let login = Login::parse("mysql", rest, &["user", "password"])?;
            RoleCheck::Mysql {
                user: login.user("mysql")?,
                password: login.password(),
            }
        }
        "agent" => {
            if !rest.is_empty() {
                return Err(
                    "'role-check agent' takes no arguments: the agent's address and port are the servers' 'agent-check' options".into(),
                );
            }
            RoleCheck::Agent
        }
        other => {
            let hint = did_you_mean(other, ["pgsql", "mysql", "agent"].into_iter());
            return Err(format!(
                "unknown role-check '{other}'{hint}: use pgsql, mysql or agent"
            ));
        }
    };
    p.role_check = Some((check, ctx.loc.clone()));
    Ok(())
}

/// The `user`, `password` and `database` pairs after `role-check pgsql|mysql`.
#[derive(Default)]
struct Login {
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
}

impl Login {
    /// Reads `KEYWORD VALUE` pairs in any order; `known` are the keywords this kind takes.
    fn parse(kind: &str, words: &[Word], known: &[&str]) -> Result<Login, String> {
        let mut login = Login::default();
        for (i, pair) in words.chunks(2).enumerate() {
            let keyword = pair[0].as_str();
            let slot = match keyword {
                "user" => &mut login.user,
                "password" => &mut login.password,
                "database" if known.contains(&"database") => &mut login.database,
                "database" => {
                    return Err(format!(
                        "'role-check {kind}' takes no 'database' (known: {})",
                        known.join(", ")
                    ));
                }
                // The word is not shown: it may be a password whose keyword was left out.
                _ => {
                    let hint = did_you_mean(keyword, known.iter().copied());
                    return Err(format!(
                        "'role-check {kind}': word {} is not one of {}{hint}; it is not shown in case it is a secret",
                        // Count from the keyword: `role-check` is word 0, the kind word 1.
                        2 + 2 * i,
                        known.join(", ")
                    ));
                }
            };
            let Some(value) = pair.get(1) else {
                return Err(format!("'role-check {kind}': '{keyword}' expects a value"));
            };
            if slot.is_some() {
                return Err(format!("'role-check {kind}': '{keyword}' is given twice"));
            }
            // `\xHH` escapes may make bytes that are not text; never guess at a credential.
            let text = String::from_utf8(value.bytes.clone())
                .map_err(|_| format!("'role-check {kind}': the {keyword} is not valid UTF-8"))?;
            *slot = Some(text);
        }
        Ok(login)
    }

    /// The password; an empty one (e.g. an unset `"$VAR"`) is no password.
    fn password(&self) -> Option<String> {
        self.password.clone().filter(|p| !p.is_empty())
    }

    /// The user, which every database kind needs.
    fn user(&self, kind: &str) -> Result<String, String> {
        match self.user.as_deref() {
            None => Err(format!(
                "'role-check {kind}' needs 'user U': the user the role check logs in as"
            )),
            Some("") => Err(format!("'role-check {kind}': the user name is empty")),
            Some(user) => Ok(user.to_string()),
        }
    }
}

/// `max-lag SIZE|DURATION`.
pub fn max_lag(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    let text = ctx.arg(
        0,
        "a size such as '16m' (bytes of WAL) or a duration with a time unit such as '10s'",
    )?;
    p.max_lag = Some((parse_max_lag(text)?, ctx.loc.clone()));
    Ok(())
}

/// Units that make a `max-lag` value a duration. `m` is not one of them: as everywhere in
/// HAProxy's size syntax it means mebibytes, so minutes are written in seconds (`120s`).
const TIME_UNITS: [&str; 5] = ["us", "ms", "s", "h", "d"];

/// Units of a size (case-insensitive, as `units::parse_size`); a bare number is bytes.
const SIZE_UNITS: [&str; 4] = ["", "k", "m", "g"];

/// Parses a `max-lag` value: a duration when it ends in a time unit, else a size.
pub fn parse_max_lag(text: &str) -> Result<MaxLag, String> {
    let unit = text.trim_start_matches(|c: char| c.is_ascii_digit());
    let has_digits = unit.len() < text.len();
    let lag = if has_digits && TIME_UNITS.contains(&unit) {
        let d = parse_duration(text, TimeUnit::Millis)?;
        (!d.is_zero()).then_some(MaxLag::Time(d))
    } else if has_digits && SIZE_UNITS.contains(&unit.to_ascii_lowercase().as_str()) {
        let bytes = parse_size(text)?;
        (bytes > 0).then_some(MaxLag::Bytes(bytes))
    } else {
        return Err(format!(
            "invalid max-lag '{text}': write a size (512k, 16m, 1g; a bare number is bytes) or a duration with a time unit (500ms, 10s, 1h); 'm' means mebibytes, so write minutes in seconds"
        ));
    };
    lag.ok_or_else(|| {
        format!("max-lag '{text}' is zero: every replica would always be out; omit 'max-lag' for no limit")
    })
}

/// `role-source check|etcd|both`.
pub fn role_source(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    ctx.at_most(1)?;
    match ctx.arg(0, "'check', 'etcd' or 'both'")? {
        "check" => p.role_source = Some((RoleSource::Check, ctx.loc.clone())),
        "etcd" => p.role_source = Some((RoleSource::Etcd, ctx.loc.clone())),
        "both" => p.role_source = Some((RoleSource::Both, ctx.loc.clone())),
        other => {
            return Err(format!(
                "unknown role-source '{other}' (use check, etcd or both)"
            ));
        }
    }
    // Whether the backend has the `discover` that `etcd` and `both` need is judged in
    // `build`, after inheritance.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::config::testing::{errors, parse};
    use std::time::Duration;

    fn backend(text: &str) -> Backend {
        match parse(text) {
            Ok(mut c) => c.backends.remove(0),
            Err(e) => panic!("{e:?}"),
        }
    }

    const PG: &str = "role-check pgsql user monitor\n";

    #[test]
    fn role_words() {
        for (word, role) in [
            ("primary", Role::Primary),
            ("replica", Role::Replica),
            ("any", Role::Any),
        ] {
            let b = backend(&format!("backend b\nrole {word}\n{PG}"));
            assert_eq!(b.role, role);
        }
        assert_eq!(backend("backend b\n").role, Role::Any);
    }

    #[test]
    fn role_inherits_from_defaults_and_is_overridden() {
        let c = parse(&format!(
            "defaults\nrole replica\n{PG}backend a\nbackend b\nrole primary\n"
        ))
        .unwrap();
        assert_eq!(c.backends[0].role, Role::Replica);
        assert_eq!(c.backends[1].role, Role::Primary);
        assert!(c.backends[1].role_check.is_some());
    }

    #[test]
    fn role_unknown_words() {
        let e = errors(&format!("backend b\n{PG}role master\n"));
        assert!(e[0].starts_with("t.cfg:3: unknown role 'master'"), "{e:?}");
        assert!(e[0].contains("'primary'"), "{e:?}");
        let e = errors(&format!("backend b\n{PG}role standby\n"));
        assert!(e[0].contains("'replica'"), "{e:?}");
        let e = errors(&format!("backend b\n{PG}role bogus\n"));
        assert!(e[0].contains("unknown role 'bogus'"), "{e:?}");
        let e = errors(&format!("backend b\n{PG}role\n"));
        assert!(e[0].contains("'role' expects"), "{e:?}");
        let e = errors(&format!("backend b\n{PG}role primary replica\n"));
        assert!(e[0].contains("unexpected argument 'replica'"), "{e:?}");
    }

    #[test]
    fn role_keywords_only_where_servers_are() {
        for kw in [
            "role primary",
            "role-check agent",
            "max-lag 1m",
            "role-source check",
        ] {
            let e = errors(&format!(
                "frontend f\nbind :1\ndefault_backend b\n{kw}\nbackend b\n"
            ));
            assert!(
                e.iter().any(
                    |e| e.starts_with("t.cfg:4: ") && e.contains("not allowed in a 'frontend'")
                ),
                "{kw}: {e:?}"
            );
        }
    }

    #[test]
    fn role_check_pgsql_words_in_any_order() {
        let b = backend(
            "backend b\nrole-check pgsql database app password \"s3 cr#et\" user monitor\n",
        );
        assert_eq!(
            b.role_check,
            Some(RoleCheck::Pgsql {
                user: "monitor".into(),
                password: Some("s3 cr#et".into()),
                database: Some("app".into()),
            })
        );
        let b = backend("backend b\nrole-check pgsql user monitor\n");
        assert_eq!(
            b.role_check,
            Some(RoleCheck::Pgsql {
                user: "monitor".into(),
                password: None,
                database: None,
            })
        );
    }

    #[test]
    fn role_check_empty_password_is_none() {
        let b = backend("backend b\nrole-check pgsql user monitor password \"${UNSET}\"\n");
        assert!(matches!(
            b.role_check,
            Some(RoleCheck::Pgsql { password: None, .. })
        ));
    }

    #[test]
    fn role_check_mysql_and_agent() {
        let b = backend("backend b\nrole-check mysql password 's3cret' user monitor\n");
        assert_eq!(
            b.role_check,
            Some(RoleCheck::Mysql {
                user: "monitor".into(),
                password: Some("s3cret".into()),
            })
        );
        let b = backend("backend b\nrole-check agent\n");
        assert_eq!(b.role_check, Some(RoleCheck::Agent));
    }

    #[test]
    fn role_check_later_line_replaces_inherited_one() {
        let c = parse(&format!(
            "defaults\n{PG}backend a\nbackend b\nrole-check agent\n"
        ))
        .unwrap();
        assert!(matches!(
            c.backends[0].role_check,
            Some(RoleCheck::Pgsql { .. })
        ));
        assert_eq!(c.backends[1].role_check, Some(RoleCheck::Agent));
    }

    #[test]
    fn role_check_missing_user() {
        let e = errors("backend b\nrole-check pgsql password s3cret database app\n");
        assert!(
            e[0].starts_with("t.cfg:2: 'role-check pgsql' needs 'user U'"),
            "{e:?}"
        );
        let e = errors("backend b\nrole-check mysql\n");
        assert!(e[0].contains("'role-check mysql' needs 'user U'"), "{e:?}");
        let e = errors("backend b\nrole-check pgsql user \"\"\n");
        assert!(e[0].contains("user name is empty"), "{e:?}");
    }

    #[test]
    fn role_check_bad_words_never_show_the_password() {
        // The password's keyword left out: the password is the unknown word.
        let e = errors("backend b\nrole-check pgsql user monitor s3cret\n");
        assert!(
            e[0].contains("word 4 is not one of user, password, database"),
            "{e:?}"
        );
        // A typo of a keyword is pointed out without echoing it.
        let e = errors("backend b\nrole-check pgsql user monitor pasword s3cret\n");
        assert!(e[0].contains("did you mean 'password'?"), "{e:?}");
        let e = errors("backend b\nrole-check pgsql user monitor password\n");
        assert!(e[0].contains("'password' expects a value"), "{e:?}");
        let e = errors("backend b\nrole-check mysql user m password s3cret password s3cret\n");
        assert!(e[0].contains("'password' is given twice"), "{e:?}");
        let e = errors("backend b\nrole-check mysql user m password s3cret database d\n");
        assert!(
            e[0].contains("'role-check mysql' takes no 'database'"),
            "{e:?}"
        );
        let e = errors("backend b\nrole-check pgsql user m password \"s3cret\\xff\"\n");
        assert!(e[0].contains("the password is not valid UTF-8"), "{e:?}");
        let e = errors("backend b\nrole-check agent password s3cret\n");
        assert!(
            e[0].contains("'role-check agent' takes no arguments"),
            "{e:?}"
        );
    }

    #[test]
    fn role_check_unknown_kind() {
        let e = errors("backend b\nrole-check postgres user u\n");
        assert!(e[0].contains("unknown role-check 'postgres'"), "{e:?}");
        let e = errors("backend b\nrole-check pgsq user u\n");
        assert!(e[0].contains("did you mean 'pgsql'?"), "{e:?}");
        let e = errors("backend b\nrole-check\n");
        assert!(e[0].contains("'role-check' expects"), "{e:?}");
    }

    #[test]
    fn max_lag_keyword() {
        let b = backend(&format!("backend b\nrole replica\n{PG}max-lag 16m\n"));
        assert_eq!(b.max_lag, Some(MaxLag::Bytes(16 << 20)));
        let b = backend(&format!("backend b\nrole replica\n{PG}max-lag 10s\n"));
        assert_eq!(b.max_lag, Some(MaxLag::Time(Duration::from_secs(10))));
        let e = errors(&format!("backend b\nrole replica\n{PG}max-lag 10x\n"));
        assert!(e[0].starts_with("t.cfg:4: invalid max-lag '10x'"), "{e:?}");
        let e = errors(&format!("backend b\nrole replica\n{PG}max-lag 1s 2s\n"));
        assert!(e[0].contains("unexpected argument"), "{e:?}");
    }

    #[test]
    fn role_source_keyword() {
        assert_eq!(
            backend("backend b\nrole-source check\n").role_source,
            RoleSource::Check
        );
        for which in ["etcd", "both"] {
            let e = errors(&format!("backend b\nrole-source {which}\n"));
            assert!(
                e[0].starts_with(&format!(
                    "t.cfg:2: backend 'b' has 'role-source {which}' but no 'discover etcd'"
                )),
                "{e:?}"
            );
        }
        let e = errors("backend b\nrole-source leader\n");
        assert!(e[0].contains("unknown role-source 'leader'"), "{e:?}");
    }

    #[test]
    fn max_lag_sizes_and_durations() {
        assert_eq!(parse_max_lag("16m"), Ok(MaxLag::Bytes(16 << 20)));
        assert_eq!(parse_max_lag("16M"), Ok(MaxLag::Bytes(16 << 20)));
        assert_eq!(parse_max_lag("512k"), Ok(MaxLag::Bytes(512 << 10)));
        assert_eq!(parse_max_lag("1g"), Ok(MaxLag::Bytes(1 << 30)));
        assert_eq!(parse_max_lag("4096"), Ok(MaxLag::Bytes(4096)));
        assert_eq!(
            parse_max_lag("10s"),
            Ok(MaxLag::Time(Duration::from_secs(10)))
        );
        assert_eq!(
            parse_max_lag("500ms"),
            Ok(MaxLag::Time(Duration::from_millis(500)))
        );
        assert_eq!(
            parse_max_lag("1h"),
            Ok(MaxLag::Time(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn max_lag_junk_zero_and_overflow() {
        for bad in [
            "", "m", "s", "10x", "10sec", "1.5s", "-1", "10S", "5 s", "1t",
        ] {
            let e = parse_max_lag(bad).unwrap_err();
            assert!(e.contains("invalid"), "{bad}: {e}");
        }
        for zero in ["0", "0k", "0s", "0ms"] {
            assert!(parse_max_lag(zero).unwrap_err().contains("zero"), "{zero}");
        }
        assert!(parse_max_lag("99999999999999999999999g").is_err());
        assert!(parse_max_lag("30d").unwrap_err().contains("overflows"));
    }
}
