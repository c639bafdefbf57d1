//! The check method of a backend: its `option ...-check` / `option httpchk` with the
//! `tcp-check` / `http-check` rules that go with it, merged as HAProxy merges them (the
//! parts of `http-check send` replace those of `option httpchk`), and what `option
//! external-check` requires of the proxy and of `global`.

use super::super::draft::{CheckOption, Diags, HttpSend, ProxyDraft};
use super::super::model::{CheckMethod, ExternalCheck, Global, HttpCheck};

/// HAProxy 2.6's rules for external checks: `option external-check` needs `external-check`
/// in `global` and an `external-check command`, which needs a leading `/` or an
/// `external-check path`; `external-check command|path` without the option are ignored
/// with a warning. HAProxy only warns without `insecure-fork-wanted`, then its checks fail to
/// start (it forbids forking once running, unless run as root); rolelb cannot reproduce that
/// and refuses the proxy instead.
pub(super) fn external_check_rules(global: &Global, p: &ProxyDraft, diags: &mut Diags) {
    let option = match &p.check_option {
        Some((CheckOption::External, loc)) => Some(loc),
        _ => None,
    };
    let Some(loc) = option else {
        for (what, set) in [
            ("command", &p.external_check_command),
            ("path", &p.external_check_path),
        ] {
            if let Some((_, at)) = set {
                diags.warn(
                    at,
                    format!(
                        "'external-check {what}' will be ignored for {} '{}' (requires 'option external-check')",
                        p.kind.keyword(),
                        p.name
                    ),
                );
            }
        }
        return;
    };
    if !global.external_check {
        diags.error(
            loc,
            format!(
                "proxy '{}': 'option external-check' needs 'external-check' in the 'global' section",
                p.name
            ),
        );
    }
    if !global.insecure_fork_wanted {
        diags.error(
            loc,
            format!(
                "proxy '{}': 'option external-check' needs 'insecure-fork-wanted' in the 'global' section (HAProxy only warns, then fails to start the checks)",
                p.name
            ),
        );
    }
    match &p.external_check_command {
        None => diags.error(
            loc,
            format!(
                "proxy '{}': 'option external-check' needs an 'external-check command'",
                p.name
            ),
        ),
        Some((command, at)) if !command.starts_with('/') && p.external_check_path.is_none() => {
            diags.error(
                at,
                format!(
                    "proxy '{}': 'external-check command' does not have a leading '/' and 'external-check path' is not set",
                    p.name
                ),
            )
        }
        Some(_) => {}
    }
}

/// The check method `p` asks for; warns about rules that its option ignores.
pub(super) fn check_method(p: &ProxyDraft, diags: &mut Diags) -> CheckMethod {
    let uses_tcp_rules = matches!(p.check_option, Some((CheckOption::TcpCheck, _)));
    let uses_http_rules = matches!(p.check_option, Some((CheckOption::Http { .. }, _)));
    if let Some(loc) = p
        .tcp_check_loc
        .as_ref()
        .filter(|_| p.tcp_check_own && !uses_tcp_rules)
    {
        diags.warn(
            loc,
            format!(
                "backend '{}' uses tcp-check rules without 'option tcp-check', so the rules are ignored",
                p.name
            ),
        );
    }
    if let Some(loc) = p
        .http_expect_loc
        .as_ref()
        .filter(|_| p.http_expect_own && !uses_http_rules)
    {
        diags.warn(
            loc,
            format!(
                "backend '{}' uses http-check rules without 'option httpchk', so the rules are ignored",
                p.name
            ),
        );
    }
    match &p.check_option {
        None => CheckMethod::Tcp,
        Some((CheckOption::TcpCheck, _)) => CheckMethod::TcpCheck(p.tcp_check_rules.clone()),
        Some((CheckOption::Pgsql { user }, _)) => CheckMethod::Pgsql { user: user.clone() },
        Some((CheckOption::Mysql { user, post_41 }, _)) => CheckMethod::Mysql {
            user: user.clone(),
            post_41: *post_41,
        },
        Some((
            CheckOption::Http {
                method,
                uri,
                version,
                headers,
                body,
            },
            _,
        )) => {
            let mut check = HttpCheck {
                method: method.clone(),
                uri: uri.clone(),
                version: version.clone(),
                headers: headers.clone(),
                body: body.clone(),
                expect: p.http_expect.clone().unwrap_or_default(),
                disable_on_404: p.disable_on_404,
            };
            if let Some(send) = &p.http_send {
                apply_send(&mut check, send);
            }
            CheckMethod::Http(check)
        }
        Some((CheckOption::External, _)) => CheckMethod::External(ExternalCheck {
            command: p
                .external_check_command
                .as_ref()
                .map(|(c, _)| c.clone())
                .unwrap_or_default(),
            path: p
                .external_check_path
                .as_ref()
                .map(|(c, _)| c.clone())
                .unwrap_or_default(),
        }),
    }
}

/// Each part `http-check send` gives replaces that part of the `option httpchk` request.
fn apply_send(check: &mut HttpCheck, send: &HttpSend) {
    if let Some(method) = &send.method {
        check.method = method.clone();
    }
    if let Some(uri) = &send.uri {
        check.uri = uri.clone();
    }
    if let Some(version) = &send.version {
        check.version = version.clone();
    }
    if !send.headers.is_empty() {
        check.headers = send.headers.clone();
    }
    if let Some(body) = &send.body {
        check.body = body.clone();
    }
}
