//! The typed settings of health checks over TLS (`check-ssl`, `verify`, `ca-file`,
//! `check-sni`, `verifyhost`, `crt`) and the global `ssl-server-verify`. The keywords are read in
//! `keywords/server_tls.rs`, the CA files loaded in `build_tls.rs`, and `check::tls` turns a
//! [`CheckTls`] into a TLS client for the check connection.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `verify none|required` on a server, `ssl-server-verify none|required` in `global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// The server's certificate is not looked at.
    None,
    /// The certificate must chain to `ca-file`, and match the name to check if there is one.
    #[default]
    Required,
}

impl Verify {
    /// The word as written in the configuration.
    pub fn keyword(self) -> &'static str {
        match self {
            Verify::None => "none",
            Verify::Required => "required",
        }
    }
}

/// How the health checks of one server speak TLS (present only with `check-ssl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTls {
    /// `verify`, else the global `ssl-server-verify` (default `required`).
    pub verify: Verify,
    /// `ca-file`: the CAs a certificate must chain to under `verify required`.
    pub ca_file: Option<Arc<CaFile>>,
    /// `check-sni`: the server name sent in the TLS handshake (none when unset).
    pub check_sni: Option<String>,
    /// `verifyhost`: the name the certificate must match when no SNI is sent.
    pub verifyhost: Option<String>,
    /// `crt`: the client certificate shown to a server that asks for one.
    pub crt: Option<Arc<ClientCert>>,
}

impl CheckTls {
    /// The name the certificate must match under `verify required`: the SNI sent, else
    /// `verifyhost`; with neither only the chain is verified (as HAProxy does).
    pub fn name_to_verify(&self) -> Option<&str> {
        self.check_sni.as_deref().or(self.verifyhost.as_deref())
    }
}

/// A loaded `ca-file` (a PEM file, a directory of them, or `@system-ca`).
#[derive(Debug)]
pub struct CaFile {
    /// The path as resolved (`ca-base` applied), for messages.
    pub path: PathBuf,
    /// The CA certificates it holds, in DER.
    pub certs: Vec<CertificateDer<'static>>,
    /// The same as trust anchors, parsed once and shared by every server's checks (a
    /// backend of thousands of discovered servers holds one copy).
    pub roots: Arc<RootCertStore>,
}

/// Two loads are the same CA file when they hold the same certificates.
impl PartialEq for CaFile {
    fn eq(&self, other: &CaFile) -> bool {
        self.path == other.path && self.certs == other.certs
    }
}

impl Eq for CaFile {}

/// A loaded `crt`: a certificate chain and its private key (from the same PEM file, or the
/// key from `FILE.key`).
#[derive(Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The path as resolved (`crt-base` applied), for messages.
    pub path: PathBuf,
    /// The certificate first, then any intermediates, in DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}
