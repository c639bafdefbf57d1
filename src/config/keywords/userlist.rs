//! The `userlist NAME` section: `user NAME [password HASH | insecure-password PASS]
//! [groups G1,G2]` and `group NAME [users U1,U2]`, as HAProxy reads them. Hashes are checked
//! here: rolelb verifies SHA-256 (`$5$`) and SHA-512 (`$6$`) crypt(3) hashes itself and
//! refuses every other format (DES, MD5 `$1$`, bcrypt, yescrypt) with the line.

use sha_crypt::{PasswordVerifier, ShaCrypt};

use super::Ctx;
use crate::config::stats_access::{Group, Password, User, Userlist};

/// Whether `hash` is a crypt(3) hash rolelb can verify; the reason when not.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let refused = |what: &str| {
        Err(format!(
            "{what} password hashes are not supported: use a SHA-512 ('$6$') or SHA-256 ('$5$') crypt hash, e.g. from 'mkpasswd -m sha-512' or 'openssl passwd -6'"
        ))
    };
    match hash.get(..3) {
        Some("$5$" | "$6$") => {}
        Some("$1$") => return refused("MD5 ('$1$')"),
        Some("$y$" | "$7$") => return refused("yescrypt/scrypt"),
        Some("$2a" | "$2b" | "$2y") => return refused("bcrypt"),
        _ if !hash.starts_with('$') => return refused("DES (traditional crypt)"),
        _ => return refused("this kind of"),
    }
    // A well-formed hash fails to verify an empty password as "invalid password"; a malformed
    // one fails to decode.
    match ShaCrypt::default().verify_password(b"", hash) {
        Ok(()) | Err(sha_crypt::password_hash::Error::PasswordInvalid) => Ok(()),
        Err(e) => Err(format!("malformed crypt hash: {e}")),
    }
}

fn names(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// One line inside a `userlist` section.
pub fn userlist_line(list: &mut Userlist, ctx: &mut Ctx) -> Result<(), String> {
    match ctx.keyword {
        "group" => {
            let name = ctx.arg(0, "<name> as argument")?.to_string();
            let users = match ctx.args.get(1).map(|w| w.as_str()) {
                None => Vec::new(),
                Some("users") => {
                    ctx.at_most(3)?;
                    names(ctx.arg(2, "a comma-separated list after 'users'")?)
                }
                Some(_) => return Err("'group' only supports the 'users' option".into()),
            };
            if list.groups.iter().any(|g| g.name == name) {
                ctx.warn(format!(
                    "ignoring duplicated group '{name}' in userlist '{}'",
                    list.name
                ));
                return Ok(());
            }
            list.groups.push(Group { name, users });
        }
        "user" => {
            let name = ctx.arg(0, "<name> as argument")?.to_string();
            let mut user = User {
                name,
                password: Password::None,
                groups: Vec::new(),
            };
            let mut i = 1;
            while let Some(option) = ctx.args.get(i).map(|w| w.as_str()) {
                let value = ctx.arg(i + 1, &format!("a value after '{option}'"))?;
                match option {
                    "password" => {
                        check_hash(value).map_err(|e| {
                            format!("user '{}' in userlist '{}': {e}", user.name, list.name)
                        })?;
                        user.password = Password::Crypt(value.to_string());
                    }
                    "insecure-password" => user.password = Password::Insecure(value.to_string()),
                    "groups" => user.groups = names(value),
                    _ => {
                        return Err(
                            "'user' only supports 'password', 'insecure-password' and 'groups' options"
                                .into(),
                        );
                    }
                }
                i += 2;
            }
            if list.users.iter().any(|u| u.name == user.name) {
                ctx.warn(format!(
                    "ignoring duplicated user '{}' in userlist '{}'",
                    user.name, list.name
                ));
                return Ok(());
            }
            list.users.push(user);
        }
        other => {
            return Err(format!(
                "unknown keyword '{other}' in 'userlist' section (expects 'user' or 'group')"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_hash;
    use crate::config::stats_access::Password;
    use crate::config::testing::{errors, parse};

    // `openssl passwd -6 -salt saltsalt secret`.
    const SHA512: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    #[test]
    fn hashes_other_than_sha_crypt_are_refused() {
        assert_eq!(check_hash(SHA512), Ok(()));
        assert!(check_hash("$1$abc$def").is_err_and(|e| e.contains("MD5")));
        assert!(check_hash("$y$j9T$abc$def").is_err_and(|e| e.contains("yescrypt")));
        assert!(check_hash("abJnggxhB/yWI").is_err_and(|e| e.contains("DES")));
        assert!(check_hash("$6$salt$").is_err_and(|e| e.contains("malformed")));
    }

    #[test]
    fn userlists_read_users_groups_and_refuse_bad_hashes_with_the_line() {
        let text = format!(
            "userlist L\ngroup admin users a,b\nuser a password {SHA512}\nuser b insecure-password pw groups ops\nuser b insecure-password other\nlisten st\nmode http\nbind :1\nstats enable\nstats http-request auth unless {{ http_auth(L) }}\n"
        );
        let c = parse(&text).expect("valid");
        let list = &c.stats[0].userlists[0];
        assert_eq!(list.users.len(), 2);
        assert_eq!(list.users[1].password, Password::Insecure("pw".into()));
        assert!(list.in_group("a", "admin") && list.in_group("b", "ops"));
        assert!(!list.in_group("a", "ops"));
        let e = errors("userlist L\nuser a password $1$abc$def\n").join("\n");
        assert!(e.contains(":2:") && e.contains("MD5"), "{e}");
        let e = errors("userlist L\nuser a secret x\n").join("\n");
        assert!(e.contains(":2:") && e.contains("only supports"), "{e}");
    }
}
