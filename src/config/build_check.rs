//! The check method of a backend: its `option ...-check` / `option httpchk` with the
//! `tcp-check` / `http-check` rules that go with it, merged as HAProxy merges them (the
//! parts of `http-check send` replace those of `option httpchk`).

use super::super::draft::{CheckOption, Diags, HttpSend, ProxyDraft};
use super::super::model::{CheckMethod, HttpCheck};

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
