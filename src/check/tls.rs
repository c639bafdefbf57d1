//! Health checks over TLS (`check-ssl`): the TLS client a server's checks use, built once per
//! check task from its [`CheckTls`], and the stream the check types read and write, plain or
//! TLS. The handshake follows the TCP connect within the same `timeout connect`; a failed one
//! is `L6RSP` "SSL handshake failure", one that runs out of time `L6TOUT`, as HAProxy reports
//! them (a certificate not valid for the name checked: "Server presented an SSL certificate
//! different from the expected one").
//!
//! Verification as HAProxy 2.6 does it with OpenSSL: `verify none` looks at nothing;
//! `verify required` wants a chain to a CA of `ca-file` and, when there is a name to check
//! (`check-sni`, else `verifyhost`), a certificate valid for it (its subjectAltName DNS
//! entries, else its Common Name: `tls_names.rs`); with no name only the chain is checked. The SNI sent is `check-sni`, or none.
//! A server that asks for a client certificate gets `crt`, if there is one.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{CheckTls, Verify};

/// The TLS client of one server's checks.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// `check-sni`, as rustls takes it.
    sni: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("sni", &self.sni).finish()
    }
}

impl TlsClient {
    /// The client for `settings`; `Err` says why it cannot be made (shown as the check's
    /// info).
    pub fn new(settings: &CheckTls) -> Result<TlsClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let name = settings.name_to_verify().map(str::to_string);
        let roots = match (&settings.verify, &settings.ca_file) {
            (Verify::Required, Some(ca)) => Some(ca.roots.clone()),
            // The configuration refuses `verify required` without a CA file; stay closed.
            (Verify::Required, None) => Some(Arc::new(RootCertStore::empty())),
            (Verify::None, _) => None,
        };
        let verifier = Arc::new(Verifier {
            roots,
            name,
            provider: provider.clone(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &settings.crt {
            Some(crt) => builder
                .with_client_auth_cert(crt.chain.clone(), crt.key.clone_key())
                .map_err(|e| format!("'crt' {}: {e}", crt.path.display()))?,
            None => builder.with_no_client_auth(),
        };
        let sni = match &settings.check_sni {
            Some(name) => Some(server_name(name)?),
            None => None,
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            sni,
        })
    }

    /// Runs the handshake on `tcp` (connected to `ip`) within `limit`.
    pub(super) async fn handshake(
        &self,
        tcp: TcpStream,
        ip: IpAddr,
        limit: Duration,
    ) -> Result<CheckStream, HandshakeError> {
        // Without `check-sni` no name is sent: rustls sends none for an IP address.
        let name = self.sni.clone().unwrap_or(ServerName::IpAddress(ip.into()));
        match tokio::time::timeout(limit, self.connector.connect(name, tcp)).await {
            Err(_) => Err(HandshakeError::Timeout),
            Ok(Err(error)) => Err(HandshakeError::Failed {
                error,
                sni: self.sni.is_some(),
            }),
            Ok(Ok(stream)) => Ok(CheckStream::Tls(Box::new(stream))),
        }
    }
}

/// A name as rustls takes it, for `check-sni` and `verifyhost`.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|_| format!("'{name}' is not a valid host name"))
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// `timeout connect` passed during the handshake: `L6TOUT`.
    Timeout,
    /// The server refused, closed, or its certificate did not verify: `L6RSP`. `sni`: a
    /// name was sent (HAProxy words a name mismatch after it).
    Failed {
        /// What failed.
        error: io::Error,
        /// Whether `check-sni` was sent.
        sni: bool,
    },
}

impl HandshakeError {
    /// HAProxy's info text: its connection error string ("SSL handshake failure", or for a
    /// certificate not valid for the name checked, "Server presented an SSL certificate
    /// different from the expected one" with an SNI sent, "... the configured one" for
    /// `verifyhost`), with the OS error of a reset after it as HAProxy adds `strerror(errno)`.
    pub(super) fn info(&self) -> String {
        let HandshakeError::Failed { error, sni } = self else {
            return String::new();
        };
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) = rustls_error
        {
            let whose = if *sni { "expected" } else { "configured" };
            return format!("Server presented an SSL certificate different from the {whose} one");
        }
        match error.raw_os_error() {
            Some(_) => format!(
                "SSL handshake failure ({})",
                super::conn::os_error_text(error)
            ),
            None => "SSL handshake failure".into(),
        }
    }

    /// What rustls said, for debug logs.
    pub(super) fn detail(&self) -> String {
        match self {
            HandshakeError::Timeout => "timeout".into(),
            HandshakeError::Failed { error, .. } => error.to_string(),
        }
    }
}

/// The connection of one check: plain TCP, or TLS over it with `check-ssl`.
#[derive(Debug)]
pub enum CheckStream {
    /// No TLS.
    Plain(TcpStream),
    /// TLS (boxed: its state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for CheckStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CheckStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            CheckStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for CheckStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            CheckStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            CheckStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CheckStream::Plain(s) => Pin::new(s).poll_flush(cx),
            CheckStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            CheckStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            CheckStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `verify none|required` as HAProxy applies it (see the module doc).
#[derive(Debug)]
struct Verifier {
    /// The CAs under `verify required`; `None` for `verify none`.
    roots: Option<Arc<RootCertStore>>,
    /// The name the certificate must be valid for, if any.
    name: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if let Some(name) = &self.name
            && !super::tls_names::valid_for(end_entity, name)
        {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
