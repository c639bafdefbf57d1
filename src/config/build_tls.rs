//! From a server's TLS draft to its [`CheckTls`]: `ca-base` applied to a relative `ca-file`
//! and `crt-base` to a relative `crt`, each file loaded once per path (the CA file a PEM
//! file, a directory of them, or `@system-ca`; the client certificate a PEM chain with its
//! key, or the key in `FILE.key`), the
//! default `verify` taken from `ssl-server-verify`, and HAProxy's refusal of `verify required`
//! without a `ca-file`. Errors name the server line.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::draft::{Diags, TlsDraft};
use crate::config::model::{CaFile, CheckTls, ClientCert, Global, Loc, Verify};

/// The directory `ca-file @system-ca` reads when `SSL_CERT_DIR` is not set (OpenSSL's
/// default on Debian, where `/usr/lib/ssl/certs` points to it).
const SYSTEM_CA_DIR: &str = "/etc/ssl/certs";

/// File name endings HAProxy loads from a `ca-file` directory.
const CA_DIR_EXTENSIONS: [&str; 3] = ["pem", "crt", "cer"];

/// Loads the CA files of one configuration, each path once.
pub(super) struct TlsLoader {
    ssl_server_verify: Verify,
    ca_base: Option<PathBuf>,
    crt_base: Option<PathBuf>,
    loaded: HashMap<PathBuf, Result<Arc<CaFile>, String>>,
    certs: HashMap<PathBuf, Result<Arc<ClientCert>, String>>,
}

impl TlsLoader {
    /// A loader for the servers of the configuration whose `global` is `global`.
    pub(super) fn new(global: &Global) -> TlsLoader {
        TlsLoader {
            ssl_server_verify: global.ssl_server_verify,
            ca_base: global.ca_base.clone(),
            crt_base: global.crt_base.clone(),
            loaded: HashMap::new(),
            certs: HashMap::new(),
        }
    }

    /// The check TLS settings of a server (`name`, declared at `loc`); `None` without
    /// `check-ssl` or when a setting is wrong (reported to `diags`). A `default-server`
    /// (`name` empty) is only checked once a server uses it, as in HAProxy.
    pub(super) fn check_tls(
        &mut self,
        tls: &TlsDraft,
        name: &str,
        loc: &Loc,
        diags: &mut Diags,
    ) -> Option<Arc<CheckTls>> {
        let ca_file = match &tls.ca_file {
            Some(written) => match self.ca_file(written) {
                Ok(ca) => Some(ca),
                Err(e) => {
                    diags.error(loc, e);
                    return None;
                }
            },
            None => None,
        };
        if !tls.check_ssl {
            return None;
        }
        // HAProxy reads `crt` only for a server that uses TLS (`ca-file` as soon as it is
        // written).
        let crt = match &tls.crt {
            Some(written) => match self.client_cert(written) {
                Ok(crt) => Some(crt),
                Err(e) => {
                    diags.error(loc, e);
                    return None;
                }
            },
            None => None,
        };
        let verify = tls.verify.unwrap_or(self.ssl_server_verify);
        if verify == Verify::Required && ca_file.is_none() && !name.is_empty() {
            let why = if tls.verify.is_none() {
                "verify is enabled by default but no CA file specified: add 'ca-file FILE' (or 'ca-file @system-ca'), or write an explicit 'verify none' on the server line, or 'ssl-server-verify none' in the global section"
            } else {
                "verify is enabled but no CA file specified: add 'ca-file FILE' (or 'ca-file @system-ca')"
            };
            diags.error(loc, format!("server '{name}': {why}"));
            return None;
        }
        Some(Arc::new(CheckTls {
            verify,
            ca_file,
            check_sni: tls.check_sni.clone(),
            verifyhost: tls.verifyhost.clone(),
            crt,
        }))
    }

    /// The client certificate as written on a server line, loaded once.
    fn client_cert(&mut self, written: &str) -> Result<Arc<ClientCert>, String> {
        let path = under(self.crt_base.as_deref(), written);
        self.certs
            .entry(path.clone())
            .or_insert_with(|| {
                load_client_cert(&path)
                    .map(|(chain, key)| Arc::new(ClientCert { path, chain, key }))
                    .map_err(|why| format!("'crt' : unable to load {written}: {why}"))
            })
            .clone()
    }

    /// The CA file as written on a server line, loaded once.
    fn ca_file(&mut self, written: &str) -> Result<Arc<CaFile>, String> {
        let path = match written {
            "@system-ca" => PathBuf::from(
                std::env::var_os("SSL_CERT_DIR").unwrap_or_else(|| SYSTEM_CA_DIR.into()),
            ),
            _ => under(self.ca_base.as_deref(), written),
        };
        self.loaded
            .entry(path.clone())
            .or_insert_with(|| {
                load(&path)
                    .map(|(certs, roots)| {
                        Arc::new(CaFile {
                            path,
                            certs,
                            roots: Arc::new(roots),
                        })
                    })
                    .map_err(|why| format!("'ca-file' : unable to load {written}: {why}"))
            })
            .clone()
    }
}

/// `written` under `base` when it is relative, as HAProxy applies `ca-base` and `crt-base`.
fn under(base: Option<&Path>, written: &str) -> PathBuf {
    match base {
        Some(base) if !written.starts_with('/') => base.join(written),
        _ => PathBuf::from(written),
    }
}

/// A certificate chain and its private key from a PEM file; without a key in it, the key of
/// `FILE.key` (HAProxy's default `ssl-load-extra-files`). The key must be one rustls can sign
/// with and must match the certificate.
fn load_client_cert(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = pem_certs(path)?;
    if chain.is_empty() {
        return Err("no certificate found in it".into());
    }
    let key = match PrivateKeyDer::from_pem_file(path) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            let mut key_path = path.as_os_str().to_owned();
            key_path.push(".key");
            PrivateKeyDer::from_pem_file(&key_path).map_err(|e| match e {
                rustls::pki_types::pem::Error::NoItemsFound
                | rustls::pki_types::pem::Error::Io(_) => format!(
                    "no private key in it nor in {}",
                    Path::new(&key_path).display()
                ),
                other => pem_error(&other),
            })?
        }
        Err(e) => return Err(pem_error(&e)),
    };
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|e| format!("unusable certificate or key ({e})"))?;
    Ok((chain, key))
}

/// The CA certificates of a PEM file or of the `.pem`, `.crt`, `.cer` files of a directory
/// (names starting with a dot skipped), and the trust anchors made of them; an error when
/// none is a usable CA.
fn load(path: &Path) -> Result<(Vec<CertificateDer<'static>>, RootCertStore), String> {
    let meta = fs::metadata(path).map_err(|e| crate::text::os_error(&e))?;
    let mut certs = Vec::new();
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| crate::text::os_error(&e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                !name.starts_with('.') && CA_DIR_EXTENSIONS.contains(&ext)
            })
            .collect();
        files.sort();
        for file in files {
            // An unreadable file among many is skipped, as OpenSSL's directory loading does.
            if let Ok(found) = pem_certs(&file) {
                certs.extend(found);
            }
        }
    } else {
        certs = pem_certs(path)?;
    }
    let mut store = RootCertStore::empty();
    let (usable, _) = store.add_parsable_certificates(certs.iter().cloned());
    if usable == 0 {
        return Err("no CA certificate found in it".into());
    }
    Ok((certs, store))
}

/// The certificates of one PEM file.
fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(&e))?;
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&e))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => crate::text::os_error(io),
        other => format!("not a PEM file ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Loc;

    fn loc() -> Loc {
        Loc {
            file: "t.cfg".into(),
            line: 7,
        }
    }

    fn draft(check_ssl: bool, verify: Option<Verify>, ca_file: Option<&str>) -> TlsDraft {
        TlsDraft {
            check_ssl,
            verify,
            ca_file: ca_file.map(str::to_string),
            ..TlsDraft::default()
        }
    }

    #[test]
    fn verify_required_by_default_needs_a_ca_file() {
        let mut loader = TlsLoader::new(&Global::default());
        let mut diags = Diags::default();
        assert!(
            loader
                .check_tls(&draft(true, None, None), "s1", &loc(), &mut diags)
                .is_none()
        );
        assert_eq!(diags.errors.len(), 1);
        assert!(
            diags.errors[0]
                .message
                .contains("verify is enabled by default")
        );
        assert_eq!(diags.errors[0].loc, loc());
    }

    #[test]
    fn ssl_server_verify_none_or_verify_none_needs_no_ca_file() {
        let global = Global {
            ssl_server_verify: Verify::None,
            ..Global::default()
        };
        let mut diags = Diags::default();
        let tls = TlsLoader::new(&global)
            .check_tls(&draft(true, None, None), "s1", &loc(), &mut diags)
            .expect("accepted");
        assert_eq!(tls.verify, Verify::None);
        let tls = TlsLoader::new(&Global::default())
            .check_tls(
                &draft(true, Some(Verify::None), None),
                "s1",
                &loc(),
                &mut diags,
            )
            .expect("accepted");
        assert_eq!(tls.verify, Verify::None);
        assert!(diags.errors.is_empty());
    }

    #[test]
    fn without_check_ssl_there_is_no_tls_but_a_bad_ca_file_is_still_an_error() {
        let mut loader = TlsLoader::new(&Global::default());
        let mut diags = Diags::default();
        assert!(
            loader
                .check_tls(&draft(false, None, None), "s1", &loc(), &mut diags)
                .is_none()
        );
        assert!(diags.errors.is_empty());
        let missing = draft(false, None, Some("/nonexistent/ca.pem"));
        loader.check_tls(&missing, "s1", &loc(), &mut diags);
        assert!(
            diags.errors[0]
                .message
                .contains("'ca-file' : unable to load /nonexistent/ca.pem: No such file"),
            "{:?}",
            diags.errors
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused_and_ca_base_prefixes_relative_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("empty.pem"), "not a certificate\n").expect("write");
        let global = Global {
            ca_base: Some(dir.path().to_path_buf()),
            ..Global::default()
        };
        let mut diags = Diags::default();
        TlsLoader::new(&global).check_tls(
            &draft(true, None, Some("empty.pem")),
            "s1",
            &loc(),
            &mut diags,
        );
        assert!(
            diags.errors[0]
                .message
                .contains("unable to load empty.pem: no CA certificate found"),
            "{:?}",
            diags.errors
        );
    }

    /// A self-signed certificate for `name` and its key, in PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn crt_takes_its_key_from_the_file_or_from_file_dot_key_under_crt_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed("checker");
        let (_, other_key) = self_signed("other");
        fs::write(dir.path().join("both.pem"), format!("{cert}{key}")).expect("write");
        fs::write(dir.path().join("split.pem"), &cert).expect("write");
        fs::write(dir.path().join("split.pem.key"), &key).expect("write");
        fs::write(dir.path().join("alone.pem"), &cert).expect("write");
        fs::write(
            dir.path().join("mismatch.pem"),
            format!("{cert}{other_key}"),
        )
        .expect("write");
        let global = Global {
            crt_base: Some(dir.path().to_path_buf()),
            ssl_server_verify: Verify::None,
            ..Global::default()
        };
        let mut loader = TlsLoader::new(&global);
        for good in ["both.pem", "split.pem"] {
            let mut diags = Diags::default();
            let mut tls = draft(true, None, None);
            tls.crt = Some(good.into());
            let got = loader.check_tls(&tls, "s1", &loc(), &mut diags);
            assert!(diags.errors.is_empty(), "{good}: {:?}", diags.errors);
            let crt = got
                .and_then(|t| t.crt.clone())
                .expect("a client certificate");
            assert_eq!(
                (crt.chain.len(), crt.path.clone()),
                (1, dir.path().join(good))
            );
        }
        for (bad, why) in [
            ("alone.pem", "no private key in it nor in"),
            ("mismatch.pem", "unusable certificate or key"),
            ("missing.pem", "No such file"),
        ] {
            let mut diags = Diags::default();
            let mut tls = draft(true, None, None);
            tls.crt = Some(bad.into());
            assert!(loader.check_tls(&tls, "s1", &loc(), &mut diags).is_none());
            let message = &diags.errors[0].message;
            assert!(
                message.starts_with(&format!("'crt' : unable to load {bad}: "))
                    && message.contains(why),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn a_ca_directory_loads_its_pem_crt_and_cer_files_but_not_hidden_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.self_signed(&key).expect("certificate").pem()
        };
        for name in ["a.pem", "b.crt", "c.cer", ".hidden.pem", "d.txt"] {
            fs::write(dir.path().join(name), ca(name)).expect("write");
        }
        let mut diags = Diags::default();
        let written = dir.path().display().to_string();
        let tls = TlsLoader::new(&Global::default())
            .check_tls(&draft(true, None, Some(&written)), "s1", &loc(), &mut diags)
            .expect("loaded");
        assert!(diags.errors.is_empty(), "{:?}", diags.errors);
        let ca_file = tls.ca_file.as_ref().expect("a CA file");
        assert_eq!(ca_file.certs.len(), 3);
    }
}
