//! TLS for the gate's listeners: the server certificate and key read from PEM files once at
//! start (rustls with the `ring` provider, no OpenSSL), and the handshake a client must finish
//! within the connect timeout before MQTT (or the WebSocket handshake) begins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key cannot be used: the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {}: {reason}", path.display())]
pub(crate) struct TlsError {
    /// The file that was read, or the certificate when the pair does not fit together.
    pub(crate) path: PathBuf,
    /// What is wrong with it.
    pub(crate) reason: String,
}

/// Accepts TLS clients with one certificate chain.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Reads the certificate chain (`cert`, leaf first) and its private key (`key`: PKCS #8,
    /// PKCS #1 or SEC1) from PEM files.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let fail = |path: &Path, reason: String| TlsError {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(cert).map_err(|e| fail(cert, e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(cert, format!("not a PEM certificate chain ({e})")))?;
        if chain.is_empty() {
            return Err(fail(cert, "holds no CERTIFICATE block".into()));
        }
        let pem = std::fs::read(key).map_err(|e| fail(key, e.to_string()))?;
        let key_der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| fail(key, format!("holds no usable private key ({e})")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                fail(
                    cert,
                    format!("does not fit the key in {}: {e}", key.display()),
                )
            })?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS handshake over `io`; the caller bounds its time.
    pub(crate) async fn accept<S>(&self, io: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.acceptor.accept(io).await
    }
}
