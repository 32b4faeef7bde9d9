//! TLS to the CQL nodes (rustls with the ring provider). The server's
//! certificate is always verified: against the given CA, or the system's
//! trust store without one; and against the node's IP address (what the
//! driver dials), or one fixed name for every node when `server_name` is
//! set (certificates issued for a DNS name). A client certificate is
//! presented when the database asks for one (`require_client_auth`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where the TLS material is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CqlTls {
    /// PEM CA certificates the nodes' certificates must chain to; none: the
    /// system's trust store.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and its key (both or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name every node's certificate must carry instead of its IP.
    pub server_name: Option<String>,
}

/// A TLS setting that cannot be used; `setting` is the config key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct TlsError {
    pub setting: &'static str,
    pub reason: String,
}

fn error(setting: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError { setting, reason: reason.into() }
}

fn read_certs(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| error(setting, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(setting, format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(setting, format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CqlTls {
    /// The driver's TLS configuration, with every file read and checked.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for cert in read_certs("cql_tls_ca", ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| error("cql_tls_ca", format!("{}: unusable CA certificate: {e}", ca.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(error("cql_tls_ca", "no CA given and the system's trust store is empty"));
                }
            }
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| error("cql_tls_ca", e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| error("cql_tls_server_name", format!("`{name}`: {e}")))?;
                Arc::new(FixedName { name, inner: webpki })
            }
            None => webpki,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error("cql_tls", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("cql_tls_cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| error("cql_tls_key", format!("{}: no usable PEM private key: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| error("cql_tls_key", format!("does not fit cql_tls_cert: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(error("cql_tls_cert", "cql_tls_cert and cql_tls_key go together")),
        };
        Ok(Arc::new(config))
    }
}

/// WebPKI verification against one name instead of the dialled IP.
struct FixedName {
    name: ServerName<'static>,
    inner: Arc<WebPkiServerVerifier>,
}

impl fmt::Debug for FixedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedName").field("name", &self.name).finish()
    }
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
