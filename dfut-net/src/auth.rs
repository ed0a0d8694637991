//! Cluster credentials and the TLS configurations built from them.
//!
//! A [`ClusterCredential`] is one self-signed certificate and its private key,
//! shared by every process of a cluster. Each process presents it, and trusts
//! only it, in both directions (mutual TLS): a peer that does not hold the
//! credential fails the handshake before it can send a single message. This
//! module does not rotate or revoke credentials; a new cluster gets a new one.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::NetError;

/// The name every cluster certificate is issued for and every client checks.
pub(crate) const SERVER_NAME: &str = "cluster.dfut.invalid";
/// Application protocol negotiated on every connection; peers of another
/// protocol version fail the handshake instead of misreading frames.
const ALPN: &[u8] = b"dfut/1";

/// The secret that makes a process a member of one cluster.
///
/// Hand it to workers started elsewhere as a PEM file
/// (`--credential-file`) or in the `DFUT_CREDENTIAL` environment variable;
/// the embedded local cluster passes it to its workers by itself.
///
/// ```
/// use dfut_net::ClusterCredential;
///
/// let credential = ClusterCredential::generate()?;
/// let pem = credential.to_pem();
/// let again = ClusterCredential::from_pem(&pem)?;
/// assert_eq!(again.to_pem(), pem);
/// assert!(ClusterCredential::from_pem("not a credential").is_err());
/// # Ok::<(), dfut_net::NetError>(())
/// ```
#[derive(Clone)]
pub struct ClusterCredential {
    cert: CertificateDer<'static>,
    key: Arc<PrivateKeyDer<'static>>,
    pem: String,
}

impl std::fmt::Debug for ClusterCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCredential(..)")
    }
}

/// A TLS configuration error, kept as the cause.
fn bad(e: impl std::error::Error + Send + Sync + 'static) -> NetError {
    NetError::Credential(crate::Cause::new(e))
}

impl ClusterCredential {
    /// Creates a fresh credential for a new cluster.
    pub fn generate() -> Result<Self, NetError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| NetError::Credential(crate::Cause::new(e)))?;
        let pem = format!(
            "{}{}",
            certified.cert.pem(),
            certified.signing_key.serialize_pem()
        );
        Self::from_pem(&pem)
    }

    /// Reads a credential from PEM text holding one certificate and its key.
    pub fn from_pem(pem: &str) -> Result<Self, NetError> {
        let cert = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| NetError::Credential(crate::Cause::context("no certificate", e)))?;
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| NetError::Credential(crate::Cause::context("no private key", e)))?;
        Ok(Self {
            cert,
            key: Arc::new(key),
            pem: pem.to_owned(),
        })
    }

    /// Reads a credential from a PEM file. On Unix a file its group or
    /// others may read is refused (with the `chmod` that fixes it): it
    /// holds the cluster's private key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, NetError> {
        Self::from_pem(&crate::keyfile::read(path.as_ref())?)
    }

    /// Writes the credential to a new file readable only by its owner
    /// (mode 0600), atomically and without following a symlink. An existing
    /// file is an error unless `overwrite`.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("dfut-doc-save-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("cluster.pem");
    /// let credential = dfut_net::ClusterCredential::generate()?;
    /// credential.save(&path, false)?;
    /// assert!(credential.save(&path, false).is_err(), "never replaced by accident");
    /// let again = dfut_net::ClusterCredential::from_file(&path)?;
    /// assert_eq!(again.to_pem(), credential.to_pem());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>, overwrite: bool) -> Result<(), NetError> {
        crate::keyfile::write(path.as_ref(), &self.pem, overwrite)
    }

    /// Whether `e`, from [`save`](Self::save), says the file already existed.
    pub fn exists_error(e: &NetError) -> bool {
        crate::keyfile::already_exists(e)
    }

    /// The credential as PEM text, to write to a file or an environment variable.
    pub fn to_pem(&self) -> String {
        self.pem.clone()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .map_err(|e| NetError::Credential(crate::Cause::new(e)))?;
        Ok(Arc::new(roots))
    }

    pub(crate) fn server_config(&self) -> Result<QuicServerConfig, NetError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Self::provider(),
        )
        .build()
        .map_err(bad)?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(bad)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        QuicServerConfig::try_from(tls).map_err(bad)
    }

    pub(crate) fn client_config(&self) -> Result<QuicClientConfig, NetError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(bad)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        QuicClientConfig::try_from(tls).map_err(bad)
    }
}
