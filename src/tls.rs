//! Built-in TLS: the certificate chain and key named by `tls.cert` and `tls.key`, served with
//! rustls (HTTP/2 and HTTP/1.1 offered by ALPN), and read again on SIGHUP so that a renewed
//! certificate is served without a restart. A reload that fails keeps the certificate being
//! served and says why; the server never stops serving for a bad file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// The certificate being served, and where it is read from.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads the chain and the key, and checks that the key is the certificate's.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = read(cert, key, &provider)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads both files again and serves them to new connections; on failure the certificate
    /// being served stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = read(&self.cert, &self.key, &self.provider)?;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }

    /// The rustls configuration of the listener; the HTTP server adds the ALPN protocols.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("choosing the TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone()))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            let why = pem_error(&e, "CERTIFICATE");
            anyhow::anyhow!("tls.cert {}: {why}", cert.display())
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls.cert {}: no CERTIFICATE block in the file",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let mut why = pem_error(&e, "PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY");
        if std::fs::read_to_string(key).is_ok_and(|t| t.contains("ENCRYPTED")) {
            why.push_str(" (an encrypted key is not supported: decrypt it, e.g. `openssl pkey -in KEY -out KEY.plain`)");
        }
        anyhow::anyhow!("tls.key {}: {why}", key.display())
    })?;
    let signing = provider.key_provider.load_private_key(private).map_err(|e| {
        anyhow::anyhow!(
            "tls.key {}: not a usable private key ({e}); RSA of 2048 bits or more, ECDSA P-256 or P-384, or Ed25519",
            key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            warn_if_others_can_read(key);
            Ok(certified)
        }
        Err(e) => Err(anyhow::anyhow!(
            "tls.key {} does not go with tls.cert {}: {e}",
            key.display(),
            cert.display()
        )),
    }
}

/// Warns when users other than the owner may read the private key (Run steps run as another
/// user when triggerd starts as root, and could then read a world-readable key).
fn warn_if_others_can_read(key: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(key) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            tracing::warn!(
                key = %key.display(),
                mode = %format!("{mode:04o}"),
                "tls.key can be read by other users (Run steps among them when they run as another user); chmod 600 it"
            );
        }
    }
}

/// A PEM error in words, for a file that should hold a block of kind `expected`.
fn pem_error(e: &rustls::pki_types::pem::Error, expected: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => format!("no {expected} block in the file"),
        Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        Error::SectionTooLarge => "a PEM block is larger than 256 MB".into(),
        _ => "not valid PEM".into(),
    }
}

/// Handles SIGHUP for as long as the process runs: reads `certificates` again when TLS is on,
/// and otherwise only logs that there is nothing to reload (the signal's default would end the
/// process without draining it).
pub fn reload_on_sighup(certificates: Option<Arc<Certificates>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(certificates) = certificates.clone() else {
                tracing::info!("SIGHUP: no TLS is configured, so there is nothing to reload");
                continue;
            };
            // File reads block: off the runtime's threads.
            let reloaded = tokio::task::spawn_blocking({
                let certificates = certificates.clone();
                move || certificates.reload()
            })
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload did not finish: {e}")));
            match reloaded {
                Ok(()) => tracing::info!(
                    cert = %certificates.cert.display(),
                    "SIGHUP: the TLS certificate was read again; new connections get it"
                ),
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "SIGHUP: the TLS certificate could not be read again; the one being served stays"
                ),
            }
        }
    });
    Ok(())
}
