//! Whether a server certificate is valid for the name a check verifies (`check-sni`, else
//! `verifyhost`), decided as HAProxy 2.6 decides it (`ssl_sock_srv_verifycbk`): the name
//! matches one of the certificate's subjectAltName DNS entries or, failing that, one of its
//! subject Common Names, each compared by HAProxy's `ssl_sock_srv_hostcheck` (case-insensitive,
//! a wildcard `*` allowed once in the leftmost label, `db*.example.com` included). So a
//! certificate whose only name is its Common Name passes, as it does with HAProxy.
//!
//! The certificate's chain is verified elsewhere (webpki); this reads only the names, with a
//! small DER reader: an unreadable certificate has no names and matches nothing.

/// The OID of the subject's Common Name, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// The OID of the subjectAltName extension, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// DER tags used below.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const EXPLICIT_0: u8 = 0xa0;
const EXPLICIT_3: u8 = 0xa3;
/// `dNSName [2] IA5String` inside GeneralNames.
const DNS_NAME: u8 = 0x82;
const BMP_STRING: u8 = 0x1e;
const UNIVERSAL_STRING: u8 = 0x1c;

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
    let (_, cert) = Der(cert).expect(SEQUENCE)?;
    let (_, tbs) = Der(cert).expect(SEQUENCE)?;
    let mut tbs = Der(tbs);
    if tbs.peek() == Some(EXPLICIT_0) {
        tbs.next()?; // version
    }
    tbs.next()?; // serialNumber
    tbs.next()?; // signature
    tbs.next()?; // issuer
    tbs.next()?; // validity
    let (tag, subject) = tbs.next()?;
    if tag != SEQUENCE {
        return None;
    }
    tbs.next()?; // subjectPublicKeyInfo
    let mut dns_names = Vec::new();
    while let Some((tag, field)) = tbs.next() {
        if tag == EXPLICIT_3 {
            dns_names = alt_dns_names(field)?;
        }
    }
    Some((dns_names, common_names(subject)?))
}

/// The Common Names of a `Name` (a SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_names(name: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rdns = Der(name);
    while let Some((tag, rdn)) = rdns.next() {
        if tag != SET {
            return None;
        }
        let mut attrs = Der(rdn);
        while let Some((_, attr)) = attrs.next() {
            let mut attr = Der(attr);
            let (_, oid) = attr.expect(OID)?;
            let (tag, value) = attr.next()?;
            if oid == OID_COMMON_NAME {
                out.push(string(tag, value));
            }
        }
    }
    Some(out)
}

/// The DNS names of the subjectAltName extension in `[3] Extensions`.
fn alt_dns_names(extensions: &[u8]) -> Option<Vec<String>> {
    let (_, list) = Der(extensions).expect(SEQUENCE)?;
    let mut list = Der(list);
    while let Some((_, ext)) = list.next() {
        let mut ext = Der(ext);
        let (_, oid) = ext.expect(OID)?;
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        // `critical BOOLEAN` may come before the value.
        let value = loop {
            let (tag, field) = ext.next()?;
            if tag == OCTET_STRING {
                break field;
            }
        };
        let (_, general_names) = Der(value).expect(SEQUENCE)?;
        let mut general_names = Der(general_names);
        let mut out = Vec::new();
        while let Some((tag, name)) = general_names.next() {
            if tag == DNS_NAME {
                out.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        return Some(out);
    }
    Some(Vec::new())
}

/// A directory string as text (OpenSSL's `ASN1_STRING_to_UTF8`).
fn string(tag: u8, value: &[u8]) -> String {
    match tag {
        BMP_STRING => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        UNIVERSAL_STRING => value
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
            .collect(),
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

/// A cursor over DER elements.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag, without taking it.
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element: (tag, content). `None` at the end or on malformed input.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, content))
    }

    /// The next element if its tag is `tag`.
    fn expect(&mut self, tag: u8) -> Option<(u8, &'a [u8])> {
        self.next().filter(|(t, _)| *t == tag)
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
        assert!(!valid_for(&both[..both.len() / 2], "db1.test"));
    }
}
