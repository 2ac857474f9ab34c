//! The MQTT client for ThingsBoard: credentials (access token, MQTT basic credentials or an X.509
//! client certificate), TLS (rustls: ThingsBoard's certificate checked against a CA file or the
//! system's roots, with its host name), the packet limits, why a connection failed in words a
//! user can act on, and the jittered exponential backoff the session reconnects with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use connector_core::gateway_config::TlsFiles;
use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, EventLoop, MqttOptions, NetworkOptions, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// A secret given as a value (flag or environment variable) or as a file, read again whenever
/// the connector (re)builds its client, so a rotated file is used without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    File(PathBuf),
}

impl Secret {
    fn read(&self) -> Result<String, String> {
        match self {
            Self::Value(value) => Ok(value.clone()),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }

    fn file(&self) -> Option<&PathBuf> {
        match self {
            Self::File(path) => Some(path),
            Self::Value(_) => None,
        }
    }
}

/// How the connector authenticates (`thingsboard.security` of `tb_gateway.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The gateway device's access token as the MQTT username.
    AccessToken(Secret),
    /// ThingsBoard's MQTT basic credentials.
    UsernamePassword {
        username: Option<Secret>,
        password: Option<Secret>,
    },
    /// The TLS client certificate identifies the gateway (no username).
    X509,
}

/// How to reach ThingsBoard (what `tb_gateway.json` holds in the ThingsBoard gateway).
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub auth: Auth,
    /// `Some`: TLS, with these files.
    pub tls: Option<TlsFiles>,
    pub client_id: String,
    pub qos: QoS,
    pub keep_alive: Duration,
    /// Largest payload of one publish, in bytes.
    pub max_payload: usize,
}

impl MqttSettings {
    /// The files whose change means new credentials or certificates.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        match &self.auth {
            Auth::AccessToken(token) => files.extend(token.file().cloned()),
            Auth::UsernamePassword { username, password } => {
                files.extend(
                    username
                        .iter()
                        .chain(password)
                        .filter_map(Secret::file)
                        .cloned(),
                );
            }
            Auth::X509 => {}
        }
        if let Some(tls) = &self.tls {
            files.extend(tls.ca_cert.clone());
            if let Some((cert, key)) = &tls.client {
                files.push(cert.clone());
                files.push(key.clone());
            }
        }
        files
    }
}

/// Largest MQTT packet the client sends or accepts.
pub const MAX_PACKET: usize = 1 << 20;
/// Largest payload the uplink packs: room for topic and header within MAX_PACKET.
pub const MAX_PAYLOAD: usize = MAX_PACKET - 1024;

pub(super) const BACKOFF_START: Duration = Duration::from_millis(500);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Requests (publishes) buffered in the client before `publish` waits: backpressure to the
/// pipeline when ThingsBoard is slow or away.
const REQUEST_CAPACITY: usize = 1024;

/// Creates the client and its event loop from the current credential and certificate files;
/// nothing is sent until the loop is driven. Fails when a file cannot be read or does not hold
/// what it should.
pub fn client(settings: &MqttSettings) -> Result<(AsyncClient, EventLoop), String> {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    match &settings.auth {
        Auth::AccessToken(token) => {
            options.set_credentials(token.read()?, "");
        }
        Auth::UsernamePassword { username, password } => {
            let username = username.as_ref().map(Secret::read).transpose()?;
            let password = password.as_ref().map(Secret::read).transpose()?;
            if username.is_some() || password.is_some() {
                options.set_credentials(username.unwrap_or_default(), password.unwrap_or_default());
            }
        }
        Auth::X509 => {}
    }
    if let Some(tls) = &settings.tls {
        let config = tls_config(tls)?;
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
    }
    options.set_keep_alive(settings.keep_alive);
    options.set_clean_session(true);
    // ThingsBoard's session limits may raise the payload size after connecting, so the client
    // accepts packets up to MAX_PACKET; the uplink never packs more than MAX_PAYLOAD.
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options.set_inflight(100);
    let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CAPACITY);
    // Without TCP_NODELAY a small publish waits for the previous one's ACK (Nagle + delayed
    // ACK): measured 40 ms to the first datapoint and 8.5 ms p99.9 latency (docs/benchmarks.md).
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    event_loop.set_network_options(network);
    Ok((client, event_loop))
}

/// rustls with TLS 1.2 and 1.3: ThingsBoard's certificate must chain to the CA file (or, without
/// one, to the system's roots) and name the host; never unchecked.
fn tls_config(files: &TlsFiles) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &files.ca_cert {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "CA certificate {}: no certificate in it",
                    ca.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(
                    "TLS without a CA file needs the system's CA certificates, and none were found (give the CA with --tb-ca-cert)"
                        .to_owned(),
                );
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match &files.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "client certificate {}: no certificate in it",
                    cert.display()
                ));
            }
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "client key {} does not fit the certificate: {e}",
                    key.display()
                )
            })
        }
    }
}

/// ±20 % so that many connectors restarted together do not reconnect in lockstep.
pub(super) fn jitter(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.8..1.2);
    delay.mul_f64(factor)
}

/// Why connecting to ThingsBoard failed: the `reason` of
/// `socket_connector_mqtt_connect_failures_total` and what the user should check.
pub(super) fn explain(error: &ConnectionError) -> (ConnectFailure, String) {
    use ConnectFailure as F;
    // A TLS failure can surface anywhere: in the handshake, or (TLS 1.3, a client certificate
    // refused after the handshake) as the first read of the MQTT session.
    if let Some(tls) = rustls_error(error) {
        return explain_rustls(tls);
    }
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => (
            F::BadCredentials,
            "ThingsBoard rejected the credentials: check the access token (--token, TB_ACCESS_TOKEN) or the MQTT username and password, and that the device is a gateway".to_owned(),
        ),
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => (
            F::NotAuthorized,
            "ThingsBoard refused this client: check the credentials, the client id and, with an X.509 certificate, that the gateway device's credentials hold it".to_owned(),
        ),
        ConnectionError::ConnectionRefused(code) => (
            F::Refused,
            format!("ThingsBoard refused the connection ({code:?})"),
        ),
        ConnectionError::Tls(tls) => (F::Tls, format!("TLS: {tls}")),
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            F::ConnectionRefused,
            "connection refused: is ThingsBoard's MQTT transport listening on --tb-host/--tb-port?".to_owned(),
        ),
        ConnectionError::Io(io)
            if io.to_string().contains("lookup") || io.to_string().contains("resolve") =>
        {
            (F::Dns, format!("cannot resolve the ThingsBoard host: {io}"))
        }
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => (
            F::Timeout,
            "ThingsBoard did not answer in time (network, firewall, or a TLS port spoken to in plain MQTT?)".to_owned(),
        ),
        ConnectionError::Io(io) => (F::Network, format!("network error: {io}")),
        other => (F::Protocol, other.to_string()),
    }
}

/// The rustls error somewhere in `error`'s chain of sources (rustls hands its errors out
/// wrapped in I/O errors).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

fn explain_rustls(error: &rustls::Error) -> (ConnectFailure, String) {
    use ConnectFailure as F;
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => (
            F::TlsUnknownCa,
            "ThingsBoard's certificate is not signed by the given CA (check --tb-ca-cert / caCert; without one, the system's CAs are used)".to_owned(),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::NotValidYet,
        )
        | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
        | rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => (
            F::TlsServerCertificateExpired,
            "ThingsBoard's certificate has expired or is not valid yet (check its dates and this machine's clock)".to_owned(),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            F::TlsNameMismatch,
            "ThingsBoard's certificate does not name the host connected to (check --tb-host against the certificate's names)".to_owned(),
        ),
        rustls::Error::AlertReceived(alert) => (
            F::TlsClientCertificateRejected,
            format!("ThingsBoard ended the TLS handshake ({alert:?}): check the client certificate (expired, not signed by a CA ThingsBoard trusts, or none given)"),
        ),
        other => (F::Tls, format!("TLS: {other}")),
    }
}

/// The `reason` label of failed connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    BadCredentials,
    NotAuthorized,
    Refused,
    ConnectionRefused,
    Dns,
    Timeout,
    Network,
    Tls,
    TlsUnknownCa,
    TlsServerCertificateExpired,
    TlsNameMismatch,
    TlsClientCertificateRejected,
    CredentialsFile,
    Protocol,
}

impl ConnectFailure {
    pub const ALL: &'static [Self] = &[
        Self::BadCredentials,
        Self::NotAuthorized,
        Self::Refused,
        Self::ConnectionRefused,
        Self::Dns,
        Self::Timeout,
        Self::Network,
        Self::Tls,
        Self::TlsUnknownCa,
        Self::TlsServerCertificateExpired,
        Self::TlsNameMismatch,
        Self::TlsClientCertificateRejected,
        Self::CredentialsFile,
        Self::Protocol,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::BadCredentials => "bad_credentials",
            Self::NotAuthorized => "not_authorized",
            Self::Refused => "refused",
            Self::ConnectionRefused => "connection_refused",
            Self::Dns => "dns",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Tls => "tls",
            Self::TlsUnknownCa => "tls_unknown_ca",
            Self::TlsServerCertificateExpired => "tls_server_certificate_expired",
            Self::TlsNameMismatch => "tls_name_mismatch",
            Self::TlsClientCertificateRejected => "tls_client_certificate_rejected",
            Self::CredentialsFile => "credentials_file",
            Self::Protocol => "protocol",
        }
    }
}
