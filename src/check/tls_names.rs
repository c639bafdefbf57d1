//! Whether a server certificate is valid for the name a check verifies (`check-sni`, else
//! `verifyhost`), decided as HAProxy 2.6 decides it (`ssl_sock_srv_verifycbk`): the name
//! matches one of the certificate's subjectAltName DNS entries or, failing that, one of its
//! subject Common Names, each compared by HAProxy's `ssl_sock_srv_hostcheck` (case-insensitive,
//! a wildcard `*` allowed once in the leftmost label, `db*.example.com` included). So a
//! certificate whose only name is its Common Name passes, as it does with HAProxy.
//!
//! The certificate's chain is verified elsewhere (webpki); this reads only the names (with
//! x509-parser): an unreadable certificate has no names and matches nothing.

use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Whether the certificate (DER) is valid for `hostname`, as HAProxy checks it.
pub(super) fn valid_for(cert: &[u8], hostname: &str) -> bool {
    let Some((dns_names, common_names)) = names(cert) else {
        return false;
    };
    dns_names
        .iter()
        .chain(common_names.iter())
        .any(|pattern| hostcheck(pattern, hostname))
}

/// HAProxy's `ssl_sock_srv_hostcheck`, after RFC 6125 section 6.4.3: equal ignoring case, or
/// a pattern with one `*` in its leftmost label standing for at least nothing of the
/// hostname's leftmost label, the other labels equal.
pub(super) fn hostcheck(pattern: &str, hostname: &str) -> bool {
    if pattern.eq_ignore_ascii_case(hostname) {
        return true;
    }
    let Some(pattern_dot) = pattern.find('.') else {
        return false;
    };
    let left = &pattern[..pattern_dot];
    let Some(star) = left.find('*') else {
        return false;
    };
    if left[star + 1..].contains('*') {
        return false;
    }
    let Some(host_dot) = hostname.find('.') else {
        return false;
    };
    if !pattern[pattern_dot..].eq_ignore_ascii_case(&hostname[host_dot..]) {
        return false;
    }
    let (prefix, suffix) = (&left[..star], &left[star + 1..]);
    let host_left = &hostname[..host_dot];
    host_left.len() >= prefix.len() + suffix.len()
        && host_left
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && host_left
            .get(host_left.len() - suffix.len()..)
            .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
}

/// The subjectAltName DNS names and the subject Common Names of a DER certificate.
fn names(cert: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        // A certificate with two subjectAltName extensions, or one that does not parse.
        Err(_) => return None,
    };
    let common_names = cert
        .subject()
        .iter_common_name()
        .map(|cn| string(cn.attr_value()))
        .collect();
    Some((dns_names, common_names))
}

/// A directory string as text, as OpenSSL's `ASN1_STRING_to_UTF8` gives it: BMPString is
/// UTF-16 and UniversalString UTF-32 (both big-endian), the others are taken as UTF-8.
fn string(value: &Any<'_>) -> String {
    let data = value.data;
    match value.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[&str], cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "rolelb");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn hostcheck_is_haproxys() {
        for (pattern, host, ok) in [
            ("db1.example.com", "DB1.Example.com", true),
            ("*.example.com", "db1.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("db*.example.com", "db12.example.com", true),
            ("db*.example.com", "web1.example.com", false),
            ("*1.example.com", "db1.example.com", true),
            ("d*1.example.com", "d1.example.com", true),
            ("db*1.example.com", "db1.example.com", true),
            ("db*1.example.com", "d1.example.com", false),
            ("**.example.com", "db1.example.com", false),
            ("*", "db1", false),
            ("db1.*.com", "db1.example.com", false),
        ] {
            assert_eq!(hostcheck(pattern, host), ok, "{pattern} vs {host}");
        }
    }

    #[test]
    fn names_come_from_the_alt_names_then_the_common_name() {
        let both = cert(&["db1.test", "*.pool.test"], "legacy.test");
        assert_eq!(
            names(&both),
            Some((
                vec!["db1.test".to_string(), "*.pool.test".to_string()],
                vec!["legacy.test".to_string()]
            ))
        );
        for host in ["db1.test", "x.pool.test", "legacy.test"] {
            assert!(valid_for(&both, host), "{host}");
        }
        assert!(!valid_for(&both, "db2.test"));
        let cn_only = cert(&[], "db*.test");
        assert!(valid_for(&cn_only, "db2.test"));
        assert!(!valid_for(&cn_only, "web.test"));
        assert!(!valid_for(b"\x30\x03\x02\x01", "db1.test"));
        // Common Names in BMPString (UTF-16) and UniversalString (UTF-32), as old CAs wrote.
        for value in [
            rcgen::DnValue::BmpString(rcgen::string::BmpString::try_from("bmp.test").expect("bmp")),
            rcgen::DnValue::UniversalString(
                rcgen::string::UniversalString::try_from("universal.test").expect("universal"),
            ),
        ] {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, value);
            let der = params
                .self_signed(&key)
                .expect("certificate")
                .der()
                .to_vec();
            let (_, cns) = names(&der).expect("names");
            assert!(cns == ["bmp.test"] || cns == ["universal.test"], "{cns:?}");
            assert!(valid_for(&der, &cns[0]));
        }
        assert!(!valid_for(&both[..both.len() / 2], "db1.test"));
    }
}
