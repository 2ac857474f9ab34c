//! TLS on the device side (rustls): the connector's server certificate and, optionally, client
//! certificates required from devices and checked against a CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use connector_core::config::TlsConfig;

/// Builds the acceptor; errors name the key whose file is at fault.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, (&'static str, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| ("certFile", format!("{}: {e}", config.cert_file)))?;
    if certs.is_empty() {
        return Err(("certFile", format!("{}: no certificate", config.cert_file)));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| ("keyFile", format!("{}: {e}", config.key_file)))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("certFile", e.to_string()))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ("clientCaFile", format!("{ca_file}: {e}")))?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| ("clientCaFile", format!("{ca_file}: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ("clientCaFile", format!("{ca_file}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder.with_single_cert(certs, key).map_err(|e| {
        (
            "keyFile",
            format!("{} does not match the certificate: {e}", config.key_file),
        )
    })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
