//! ThingsBoard's main gateway file, `tb_gateway.json`, as far as it concerns this connector: where
//! ThingsBoard is and how to authenticate (`thingsboard`), how data is kept while ThingsBoard is
//! away (`storage`), and which socket connector runs (`connectors`). The file loads unchanged;
//! every key this connector does not use is reported by its path.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, ReportStrategyConfig};

/// The parts of `tb_gateway.json` this connector reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayFile {
    thingsboard: ThingsBoardSection,
    #[serde(default)]
    storage: Option<StorageSection>,
    #[serde(default)]
    connectors: Vec<ConnectorEntry>,
    /// The gateway's gRPC server for external connectors: not part of this connector.
    #[serde(default)]
    grpc: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThingsBoardSection {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    qos: Option<u8>,
    security: SecuritySection,
    #[serde(default)]
    max_payload_size_bytes: Option<usize>,
    #[serde(default, rename = "minPackSendDelayMS")]
    min_pack_send_delay_ms: Option<u64>,
    #[serde(default)]
    min_pack_size_to_send: Option<usize>,
    #[serde(default)]
    report_strategy: Option<ReportStrategyConfig>,
    #[serde(default)]
    remote_configuration: Option<bool>,
    /// Keys of the gateway that this connector accepts and does not use.
    #[serde(default)]
    remote_shell: Option<Value>,
    #[serde(default)]
    latency_debug_mode: Option<Value>,
    #[serde(default)]
    statistics: Option<Value>,
    #[serde(default)]
    device_filtering: Option<Value>,
    #[serde(default)]
    check_connectors_configuration_in_seconds: Option<Value>,
    #[serde(default)]
    handle_device_renaming: Option<Value>,
    #[serde(default)]
    checking_device_activity: Option<Value>,
    #[serde(default)]
    rate_limits: Option<Value>,
    #[serde(default)]
    dp_rate_limits: Option<Value>,
    #[serde(default)]
    messages_rate_limits: Option<Value>,
    #[serde(default)]
    device_messages_rate_limits: Option<Value>,
    #[serde(default)]
    device_rate_limits: Option<Value>,
    #[serde(default)]
    device_dp_rate_limits: Option<Value>,
    #[serde(default)]
    provisioning: Option<Value>,
    #[serde(default)]
    proxy_host: Option<Value>,
    #[serde(default)]
    proxy_port: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecuritySection {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    ca_cert: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    tls: Option<bool>,
    #[serde(default)]
    insecure: Option<bool>,
    #[serde(default)]
    check_cert_period: Option<Value>,
    #[serde(default)]
    certificate_days_left: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct StorageSection {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    max_records_count: Option<u64>,
    #[serde(default)]
    read_records_count: Option<Value>,
    #[serde(default)]
    data_folder_path: Option<String>,
    #[serde(default)]
    max_file_count: Option<u64>,
    #[serde(default)]
    max_read_records_count: Option<Value>,
    #[serde(default)]
    max_records_per_file: Option<u64>,
    #[serde(default)]
    data_file_path: Option<String>,
    #[serde(default)]
    messages_ttl_check_in_hours: Option<Value>,
    #[serde(default)]
    messages_ttl_in_days: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct ConnectorEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    configuration: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// How the connector proves who it is to ThingsBoard (`thingsboard.security.type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `accessToken` / `tlsAccessToken`: the gateway device's token as MQTT username.
    AccessToken(String),
    /// `usernamePassword`: ThingsBoard's MQTT basic credentials.
    UsernamePassword {
        client_id: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
    /// `tlsPrivateKey`: an X.509 client certificate identifies the gateway.
    X509,
}

/// TLS towards ThingsBoard: on, with these files (paths resolved against the file's directory).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// The CA that signed ThingsBoard's certificate; the system's roots when absent.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and private key (X.509 authentication).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Where data waits while ThingsBoard is away (`storage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageChoice {
    Memory {
        max_bytes: Option<u64>,
    },
    Disk {
        directory: PathBuf,
        max_bytes: Option<u64>,
    },
}

/// What `tb_gateway.json` says, in this connector's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    pub host: String,
    pub port: Option<u16>,
    pub qos: Option<u8>,
    pub credentials: Credentials,
    /// `Some` when the file asks for TLS (a CA, `tls: true`, or a TLS security type).
    pub tls: Option<TlsFiles>,
    pub max_payload: Option<usize>,
    pub min_pack_send_delay_ms: Option<u64>,
    pub min_pack_size_to_send: Option<usize>,
    pub report_strategy: Option<ReportStrategyConfig>,
    pub storage: Option<StorageChoice>,
    /// The socket connector to run: its name and its `socket.json`.
    pub socket_connector: Option<(Option<String>, PathBuf)>,
    pub remote_configuration: bool,
    /// `thingsboard.handleDeviceRenaming` (on unless the file turns it off).
    pub handle_device_renaming: bool,
    /// `thingsboard.statistics`, when the file has it.
    pub statistics: Option<StatisticsSetting>,
    /// Keys accepted and not used, and other things the user should hear, with their paths.
    pub warnings: Vec<String>,
}

/// The gateway statistics of `thingsboard.statistics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatisticsSetting {
    pub enabled: bool,
    pub period_seconds: Option<u64>,
}

/// The gateway's shortest `statsSendPeriodInSeconds`.
pub const MIN_STATISTICS_PERIOD_SECONDS: u64 = 10;

/// What one record of the ThingsBoard gateway's storage is taken to weigh in the queue, to turn
/// its record counts into this queue's byte bound.
pub const BYTES_PER_STORAGE_RECORD: u64 = 256;

/// Reads `tb_gateway.json`; relative paths are taken from its directory (as the gateway does
/// for certificates).
pub fn load_gateway_file(path: &Path) -> Result<GatewaySettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    let directory = path.parent().unwrap_or_else(|| Path::new("."));
    parse_gateway_file(&text, directory)
}

/// Parses the text of a `tb_gateway.json` whose relative paths start at `directory`.
pub fn parse_gateway_file(text: &str, directory: &Path) -> Result<GatewaySettings, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let mut ignored = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
    let deserializer = serde_ignored::Deserializer::new(value, &mut on_ignored);
    let file: GatewayFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::invalid(path, e.into_inner().to_string())
    })?;
    let mut warnings: Vec<String> = ignored
        .into_iter()
        .map(|path| format!("{path}: unknown key, ignored"))
        .collect();
    let tb = &file.thingsboard;
    for (key, set) in [
        ("remoteShell", tb.remote_shell.is_some()),
        ("latencyDebugMode", tb.latency_debug_mode.is_some()),
        ("deviceFiltering", tb.device_filtering.is_some()),
        (
            "checkConnectorsConfigurationInSeconds",
            tb.check_connectors_configuration_in_seconds.is_some(),
        ),
        (
            "checkingDeviceActivity",
            tb.checking_device_activity.is_some(),
        ),
        (
            "rateLimits, dpRateLimits, messagesRateLimits (ThingsBoard's session limits apply)",
            tb.rate_limits.is_some()
                || tb.dp_rate_limits.is_some()
                || tb.messages_rate_limits.is_some(),
        ),
        (
            "deviceMessagesRateLimits, deviceRateLimits, deviceDpRateLimits",
            tb.device_messages_rate_limits.is_some()
                || tb.device_rate_limits.is_some()
                || tb.device_dp_rate_limits.is_some(),
        ),
        ("provisioning", tb.provisioning.is_some()),
        (
            "proxy_host, proxy_port",
            tb.proxy_host.is_some() || tb.proxy_port.is_some(),
        ),
    ] {
        if set {
            warnings.push(format!(
                "thingsboard.{key}: not supported by this connector, ignored"
            ));
        }
    }
    let statistics = tb
        .statistics
        .as_ref()
        .map(|section| statistics_setting(section, &mut warnings));
    if file.grpc.is_some() {
        warnings.push("grpc: not supported by this connector, ignored".to_owned());
    }
    let (credentials, tls) = security(&tb.security, tb.port, directory, &mut warnings)?;
    let storage = file
        .storage
        .as_ref()
        .map(|storage| storage_choice(storage, directory, &mut warnings))
        .transpose()?;
    let mut sockets = file
        .connectors
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.kind.eq_ignore_ascii_case("socket"));
    let socket_connector = match sockets.next() {
        Some((index, entry)) => {
            let configuration = entry.configuration.as_deref().ok_or_else(|| {
                ConfigError::invalid(format!("connectors[{index}].configuration"), "missing")
            })?;
            for key in entry.rest.keys() {
                warnings.push(format!(
                    "connectors[{index}].{key}: not used by this connector, ignored"
                ));
            }
            Some((entry.name.clone(), resolve(directory, configuration)))
        }
        None => None,
    };
    for (index, _) in sockets {
        warnings.push(format!(
            "connectors[{index}]: a second socket connector; one connector process runs one (the first)"
        ));
    }
    for (index, entry) in file.connectors.iter().enumerate() {
        if !entry.kind.eq_ignore_ascii_case("socket") {
            warnings.push(format!(
                "connectors[{index}]: a {} connector; only socket connectors run here, ignored",
                entry.kind
            ));
        }
    }
    if let Some(qos) = tb.qos.filter(|qos| *qos > 1) {
        return Err(ConfigError::invalid(
            "thingsboard.qos",
            format!("must be 0 or 1, got {qos}"),
        ));
    }
    Ok(GatewaySettings {
        host: tb.host.clone(),
        port: tb.port,
        qos: tb.qos,
        credentials,
        tls,
        max_payload: tb.max_payload_size_bytes,
        min_pack_send_delay_ms: tb.min_pack_send_delay_ms,
        min_pack_size_to_send: tb.min_pack_size_to_send,
        report_strategy: tb.report_strategy.clone(),
        storage,
        socket_connector,
        remote_configuration: tb.remote_configuration == Some(true),
        // The gateway tests the value's truth, as Python does.
        handle_device_renaming: tb.handle_device_renaming.as_ref().is_none_or(|value| {
            !matches!(value, Value::Null | Value::Bool(false))
                && value.as_f64() != Some(0.0)
                && value.as_str() != Some("")
                && value.as_array().is_none_or(|a| !a.is_empty())
                && value.as_object().is_none_or(|o| !o.is_empty())
        }),
        statistics,
        warnings,
    })
}

/// `thingsboard.statistics`: `enable` (default true) and `statsSendPeriodInSeconds` (at least
/// 10, as the gateway enforces). Custom statistics run shell commands and are not supported.
fn statistics_setting(section: &Value, warnings: &mut Vec<String>) -> StatisticsSetting {
    if section.get("enableCustom").and_then(Value::as_bool) == Some(true)
        || section.get("configuration").is_some()
    {
        warnings.push(
            "thingsboard.statistics.enableCustom: custom statistics (shell commands) are not run by this connector"
                .to_owned(),
        );
    }
    StatisticsSetting {
        enabled: section
            .get("enable")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        period_seconds: section
            .get("statsSendPeriodInSeconds")
            .and_then(Value::as_u64)
            .map(|seconds| seconds.max(MIN_STATISTICS_PERIOD_SECONDS)),
    }
}

/// A file named in `tb_gateway.json`: a relative name is taken from the file's directory (the
/// ThingsBoard gateway looks there first).
fn resolve(directory: &Path, name: &str) -> PathBuf {
    directory.join(name)
}

fn security(
    security: &SecuritySection,
    port: Option<u16>,
    directory: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Credentials, Option<TlsFiles>), ConfigError> {
    let kind = match security.kind.as_deref() {
        Some(kind) => kind,
        None if security.access_token.is_some() => "accessToken",
        None => {
            return Err(ConfigError::invalid(
                "thingsboard.security.type",
                "missing: one of accessToken, tlsAccessToken, usernamePassword, tlsPrivateKey",
            ))
        }
    };
    let file = |key: &str, value: &Option<String>| -> Result<PathBuf, ConfigError> {
        value
            .as_deref()
            .map(|name| resolve(directory, name))
            .ok_or_else(|| {
                ConfigError::invalid(
                    format!("thingsboard.security.{key}"),
                    format!("missing: required by type {kind}"),
                )
            })
    };
    let ca_cert = security
        .ca_cert
        .as_deref()
        .map(|name| resolve(directory, name));
    let (credentials, tls_by_type) = match kind {
        "accessToken" | "tlsAccessToken" => {
            let token = security.access_token.clone().ok_or_else(|| {
                ConfigError::invalid("thingsboard.security.accessToken", "missing")
            })?;
            (Credentials::AccessToken(token), kind == "tlsAccessToken")
        }
        "usernamePassword" => (
            Credentials::UsernamePassword {
                client_id: security.client_id.clone(),
                username: security.username.clone(),
                password: security.password.clone(),
            },
            false,
        ),
        "tlsPrivateKey" => {
            file("caCert", &security.ca_cert)?;
            (Credentials::X509, true)
        }
        other => {
            return Err(ConfigError::invalid(
                "thingsboard.security.type",
                format!("unknown type {other:?}; one of accessToken, tlsAccessToken, usernamePassword, tlsPrivateKey"),
            ))
        }
    };
    let client = if kind == "tlsPrivateKey" {
        Some((
            file("cert", &security.cert)?,
            file("privateKey", &security.private_key)?,
        ))
    } else {
        None
    };
    let tls = tls_by_type || ca_cert.is_some() || security.tls == Some(true) || port == Some(8883);
    if security.insecure == Some(true) {
        warnings.push("thingsboard.security.insecure: not supported, ignored: ThingsBoard's certificate and host name are always checked".to_owned());
    }
    if security.check_cert_period.is_some() || security.certificate_days_left.is_some() {
        warnings.push("thingsboard.security.checkCertPeriod, certificateDaysLeft: not supported, ignored: certificate files are watched and a changed one is used at once".to_owned());
    }
    Ok((credentials, tls.then_some(TlsFiles { ca_cert, client })))
}

fn storage_choice(
    storage: &StorageSection,
    directory: &Path,
    warnings: &mut Vec<String>,
) -> Result<StorageChoice, ConfigError> {
    let records =
        |count: Option<u64>| count.map(|count| count.saturating_mul(BYTES_PER_STORAGE_RECORD));
    match storage.kind.as_str() {
        "memory" => Ok(StorageChoice::Memory {
            max_bytes: records(storage.max_records_count),
        }),
        "file" => {
            let folder = storage.data_folder_path.as_deref().unwrap_or("./data/");
            let records_in_files = storage
                .max_file_count
                .zip(storage.max_records_per_file)
                .map(|(files, per_file)| files.saturating_mul(per_file));
            Ok(StorageChoice::Disk {
                directory: resolve(directory, folder),
                max_bytes: records(records_in_files),
            })
        }
        "sqlite" => {
            let file = storage.data_file_path.as_deref().unwrap_or("./data/");
            let folder = Path::new(file);
            let folder = if file.ends_with('/') {
                folder.to_path_buf()
            } else {
                folder.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            if storage.messages_ttl_in_days.is_some() {
                warnings.push("storage.messages_ttl_in_days: not supported: queued data is kept until ThingsBoard acknowledges it or the queue's full policy drops it".to_owned());
            }
            Ok(StorageChoice::Disk {
                directory: resolve(directory, &folder.to_string_lossy()),
                max_bytes: None,
            })
        }
        other => Err(ConfigError::invalid(
            "storage.type",
            format!("unknown type {other:?}; one of memory, file, sqlite"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<GatewaySettings, ConfigError> {
        parse_gateway_file(&value.to_string(), Path::new("/etc/tb"))
    }

    #[test]
    fn the_gateways_own_default_file_loads_with_warnings_for_what_is_not_used() {
        let text = include_str!("../../examples/thingsboard/tb_gateway.json");
        let settings = parse_gateway_file(text, Path::new("/etc/tb")).unwrap();
        assert_eq!(settings.host, "thingsboard.cloud");
        assert_eq!(settings.port, Some(1883));
        assert_eq!(
            settings.credentials,
            Credentials::AccessToken("YOUR_ACCESS_TOKEN".into())
        );
        assert_eq!(settings.tls, None);
        assert_eq!(settings.max_payload, Some(8196));
        assert_eq!(settings.min_pack_send_delay_ms, Some(50));
        assert_eq!(settings.min_pack_size_to_send, Some(500));
        assert_eq!(
            settings.storage,
            Some(StorageChoice::Memory {
                max_bytes: Some(100_000 * 256)
            })
        );
        assert_eq!(
            settings.socket_connector,
            Some((
                Some("Socket Connector".into()),
                PathBuf::from("/etc/tb/socket.json")
            ))
        );
        assert!(settings.remote_configuration);
        assert!(settings.handle_device_renaming);
        assert_eq!(
            settings.statistics,
            Some(StatisticsSetting {
                enabled: true,
                period_seconds: Some(60)
            })
        );
        for key in ["thingsboard.remoteShell", "grpc"] {
            assert!(
                settings.warnings.iter().any(|w| w.starts_with(key)),
                "{key}: {:?}",
                settings.warnings
            );
        }
    }

    #[test]
    fn device_renaming_is_on_unless_the_file_turns_it_off() {
        let with = |value: Option<Value>| {
            let mut tb =
                json!({"host": "tb", "security": {"type": "accessToken", "accessToken": "t"}});
            if let Some(value) = value {
                tb["handleDeviceRenaming"] = value;
            }
            parse(json!({ "thingsboard": tb }))
                .unwrap()
                .handle_device_renaming
        };
        assert!(with(None));
        assert!(with(Some(json!(true))));
        assert!(!with(Some(json!(false))));
        assert!(!with(Some(json!(0))));
    }

    #[test]
    fn every_security_type() {
        let with = |security: Value, port: u16| {
            parse(json!({"thingsboard": {"host": "tb", "port": port, "security": security}}))
        };
        let token = with(
            json!({"type": "tlsAccessToken", "accessToken": "t", "caCert": "ca.pem"}),
            8883,
        )
        .unwrap();
        assert_eq!(token.credentials, Credentials::AccessToken("t".into()));
        assert_eq!(
            token.tls,
            Some(TlsFiles {
                ca_cert: Some("/etc/tb/ca.pem".into()),
                client: None
            })
        );
        let basic = with(
            json!({"type": "usernamePassword", "clientId": "c", "username": "u", "password": "p"}),
            1883,
        )
        .unwrap();
        assert_eq!(
            basic.credentials,
            Credentials::UsernamePassword {
                client_id: Some("c".into()),
                username: Some("u".into()),
                password: Some("p".into())
            }
        );
        assert_eq!(
            basic.tls, None,
            "no CA, port 1883: plain MQTT, as the gateway does"
        );
        let x509 = with(json!({"type": "tlsPrivateKey", "caCert": "/pki/ca.pem", "cert": "gw.pem", "privateKey": "gw.key"}), 8883).unwrap();
        assert_eq!(x509.credentials, Credentials::X509);
        assert_eq!(
            x509.tls,
            Some(TlsFiles {
                ca_cert: Some("/pki/ca.pem".into()),
                client: Some(("/etc/tb/gw.pem".into(), "/etc/tb/gw.key".into()))
            })
        );
        let port_8883 = with(json!({"accessToken": "t"}), 8883).unwrap();
        assert_eq!(
            port_8883.tls,
            Some(TlsFiles::default()),
            "8883 means TLS with the system's roots"
        );
        assert_eq!(
            with(
                json!({"type": "tlsPrivateKey", "caCert": "ca.pem", "cert": "c.pem"}),
                8883
            )
            .unwrap_err()
            .to_string(),
            "thingsboard.security.privateKey: missing: required by type tlsPrivateKey"
        );
        assert_eq!(
            with(json!({"type": "kerberos"}), 1883).unwrap_err().to_string(),
            "thingsboard.security.type: unknown type \"kerberos\"; one of accessToken, tlsAccessToken, usernamePassword, tlsPrivateKey"
        );
    }

    #[test]
    fn storage_types_map_to_the_queue() {
        let with = |storage: Value| {
            parse(json!({"thingsboard": {"host": "tb", "security": {"accessToken": "t"}}, "storage": storage}))
                .unwrap()
                .storage
        };
        assert_eq!(
            with(
                json!({"type": "file", "data_folder_path": "./data/", "max_file_count": 10, "max_records_per_file": 10000})
            ),
            Some(StorageChoice::Disk {
                directory: "/etc/tb/./data/".into(),
                max_bytes: Some(100_000 * 256)
            })
        );
        assert_eq!(
            with(json!({"type": "sqlite", "data_file_path": "/var/lib/tb/storage.db"})),
            Some(StorageChoice::Disk {
                directory: "/var/lib/tb".into(),
                max_bytes: None
            })
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let settings = parse(json!({"thingsboard": {"host": "tb", "security": {"accessToken": "t"}, "colour": "blue"}, "extra": 1})).unwrap();
        assert_eq!(
            settings.warnings,
            [
                "thingsboard.colour: unknown key, ignored",
                "extra: unknown key, ignored"
            ]
        );
    }
}
