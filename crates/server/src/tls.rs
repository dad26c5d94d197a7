//! TLS on the public listener (rustls, ring): a PEM certificate chain and key, ALPN
//! `http/1.1` (WebSockets upgrade over HTTP/1.1), and a reload without a restart when
//! the files change (polled) or on SIGHUP — a renewed certificate (certbot, cert-manager)
//! takes effect for the next handshake; open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// How often the certificate and key files are checked for a change. A renewal lands
/// days before the old certificate expires, so seconds of delay cost nothing; a
/// `stat` of two files every 2 s costs nothing either.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("reading the certificate chain {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    /// The key file could not be read or holds no PEM private key.
    #[error("reading the private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// rustls refused the pair (unsupported key type, or the key is not the certificate's).
    #[error("the key does not fit the certificate: {0}")]
    Mismatch(#[source] rustls::Error),
    /// The TLS configuration could not be built.
    #[error("building the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The certificate served right now; swapped whole on a reload.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// TLS of the public listener: the acceptor and the files it reloads from.
pub(crate) struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    slot: Arc<CertSlot>,
    cert: PathBuf,
    key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM chain and key into a key rustls can sign with, checking they match.
fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate { path: cert.to_owned(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate { path: cert.to_owned(), reason: "no CERTIFICATE block".into() });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key { path: key.to_owned(), reason: e.to_string() })?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(TlsError::Mismatch)
}

/// The files' modification times and sizes: what a change is judged by.
fn stamp(paths: [&Path; 2]) -> Option<[(SystemTime, u64); 2]> {
    let one = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    Some([one(paths[0])?, one(paths[1])?])
}

impl Tls {
    /// Loads `cert` and `key` (PEM); errors say which file and why.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let slot = Arc::new(CertSlot(RwLock::new(Arc::new(load(cert, key)?))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(slot.clone());
        // HTTP/1.1 only: WebSocket upgrades (RFC 6455) need it, and the listener speaks no h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), slot, cert: cert.to_owned(), key: key.to_owned() })
    }

    /// The acceptor for new connections (it always serves the current certificate).
    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Loads the files again; on failure the served certificate stays.
    fn reload(&self, why: &'static str) {
        match load(&self.cert, &self.key) {
            Ok(key) => {
                *self.slot.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                tracing::info!(event = "tls_reloaded", trigger = why, cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(
                event = "tls_reload_failed",
                trigger = why,
                error = %e,
                "TLS certificate not reloaded; still serving the previous one"
            ),
        }
    }

    /// Reloads on SIGHUP and whenever the files change, until `stop` turns true.
    pub(crate) async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut last = stamp([&self.cert, &self.key]);
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; TLS reloads on file changes only");
                None
            }
        };
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                _ = hangup => self.reload("sighup"),
                _ = tokio::time::sleep(RELOAD_POLL) => {
                    let now = stamp([&self.cert, &self.key]);
                    // A file mid-rewrite (missing, or its pair not yet written) is retried next poll.
                    if now.is_some() && now != last {
                        last = now;
                        self.reload("file_changed");
                    }
                }
            }
        }
    }
}
