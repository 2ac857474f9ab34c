//! The gateway-wide settings of a run: ThingsBoard's own `tb_gateway.json` when given, overridden
//! by flags and environment variables, completed by defaults. Pure: the binary's flags come in,
//! the runtime's settings go out, every conflict with a clear message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use connector_core::config::{ReportStrategy, ReportStrategyConfig};
use connector_core::gateway_config::{
    self, Credentials, StatisticsSetting, StorageChoice, TlsFiles,
};
use connector_core::settings::{Fsync, FullPolicy};

use crate::queue::{QueueSettings, Storage};
use crate::remote_config::RemoteConfiguration;
use crate::runtime::{GatewaySettings, DEFAULT_MAX_DEVICES};
use crate::thingsboard::link::{Auth, Secret, MAX_PAYLOAD};
use crate::thingsboard::uplink::{Batching, DEFAULT_MAX_MESSAGES_PER_BATCH};
use crate::thingsboard::{statistics, MqttSettings};

/// What the command line (flags and environment variables) says; `None` leaves it to the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub gateway_config: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub tls: bool,
    pub client_id: Option<String>,
    pub qos: Option<u8>,
    pub report_strategy: Option<ReportStrategyConfig>,
    pub connector_name: Option<String>,
    pub max_payload_size: Option<usize>,
    pub keep_alive: Duration,
    pub metrics_address: Option<SocketAddr>,
    pub max_devices: Option<usize>,
    pub min_pack_send_delay_ms: Option<u64>,
    pub min_pack_size_to_send: Option<usize>,
    pub queue_directory: Option<PathBuf>,
    pub queue_max_bytes: Option<u64>,
    pub queue_full_policy: FullPolicy,
    pub queue_fsync: Fsync,
    pub remote_configuration: bool,
    pub config_changed_at_ms: Option<i64>,
    /// `--statistics-period-seconds`: 0 turns the gateway statistics off.
    pub statistics_period_seconds: Option<u64>,
}

/// A run's settings, and where they came from.
#[derive(Debug)]
pub struct Resolved {
    pub settings: GatewaySettings,
    /// The `socket.json` to run.
    pub config: PathBuf,
    /// What the user should hear about `tb_gateway.json`.
    pub warnings: Vec<String>,
}

const DEFAULT_HOST: &str = "localhost";
const DEFAULT_PORT: u16 = 1883;
const TLS_PORT: u16 = 8883;
const DEFAULT_MAX_PAYLOAD: usize = 8196;
const DEFAULT_MEMORY_QUEUE: u64 = 64 << 20;
const DEFAULT_DISK_QUEUE: u64 = 1 << 30;
/// Longest accepted linger: beyond a second, batching only adds latency.
const MAX_LINGER_MS: u64 = 1000;

/// Merges flags over `tb_gateway.json` over defaults. `random_id` names the MQTT client when
/// nothing else does.
pub fn resolve(overrides: Overrides, random_id: u32) -> Result<Resolved, String> {
    let file = overrides
        .gateway_config
        .as_ref()
        .map(|path| {
            gateway_config::load_gateway_file(path)
                .map_err(|e| format!("invalid gateway configuration {}: {e}", path.display()))
        })
        .transpose()?;
    let config = overrides
        .config
        .clone()
        .or_else(|| file.as_ref()?.socket_connector.as_ref().map(|(_, path)| path.clone()))
        .ok_or_else(|| {
            "no socket.json: give --config, or --gateway-config with a socket connector in its connectors".to_owned()
        })?;
    let (auth, file_client_id) = auth(&overrides, file.as_ref().map(|f| &f.credentials))?;
    let port = overrides
        .port
        .or(file.as_ref().and_then(|f| f.port))
        .unwrap_or(DEFAULT_PORT);
    let tls = tls(
        &overrides,
        file.as_ref().and_then(|f| f.tls.clone()),
        port,
        &auth,
    )?;
    let host = overrides
        .host
        .clone()
        .or(file.as_ref().map(|f| f.host.clone()))
        .unwrap_or_else(|| DEFAULT_HOST.to_owned());
    let qos = match overrides
        .qos
        .or(file.as_ref().and_then(|f| f.qos))
        .unwrap_or(1)
    {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        other => return Err(format!("--qos must be 0 or 1, got {other}")),
    };
    let max_payload = overrides
        .max_payload_size
        .or(file.as_ref().and_then(|f| f.max_payload))
        .unwrap_or(DEFAULT_MAX_PAYLOAD)
        .clamp(256, MAX_PAYLOAD);
    let report_strategy = overrides
        .report_strategy
        .clone()
        .or(file.as_ref().and_then(|f| f.report_strategy.clone()));
    let connector_name = overrides.connector_name.clone().or_else(|| {
        file.as_ref()?
            .socket_connector
            .as_ref()
            .and_then(|(name, _)| name.clone())
    });
    let queue = queue(&overrides, file.as_ref().and_then(|f| f.storage.clone()));
    let linger_ms = overrides
        .min_pack_send_delay_ms
        .or(file.as_ref().and_then(|f| f.min_pack_send_delay_ms));
    if let Some(ms) = linger_ms.filter(|ms| *ms > MAX_LINGER_MS) {
        return Err(format!(
            "minPackSendDelayMS {ms} is above {MAX_LINGER_MS} ms: data would wait that long before every publish"
        ));
    }
    let batching = Batching {
        linger: linger_ms.map(Duration::from_millis),
        max_messages: overrides
            .min_pack_size_to_send
            .or(file.as_ref().and_then(|f| f.min_pack_size_to_send))
            .unwrap_or(DEFAULT_MAX_MESSAGES_PER_BATCH)
            .max(1),
    };
    let client_id = overrides
        .client_id
        .clone()
        .or(file_client_id)
        .unwrap_or_else(|| format!("socket-connector-{random_id:08x}"));
    let settings = GatewaySettings {
        mqtt: MqttSettings {
            host,
            port,
            auth,
            tls,
            client_id,
            qos,
            keep_alive: overrides.keep_alive.max(Duration::from_secs(5)),
            max_payload,
        },
        report_strategy: ReportStrategy::global(report_strategy.as_ref()),
        connector_name,
        metrics_address: overrides.metrics_address,
        queue,
        max_devices: overrides.max_devices.unwrap_or(DEFAULT_MAX_DEVICES),
        batching,
        remote_configuration: (overrides.remote_configuration
            || file.as_ref().is_some_and(|f| f.remote_configuration))
        .then(|| RemoteConfiguration {
            config_file: config.clone(),
            config_changed_at_ms: overrides.config_changed_at_ms,
        }),
        log_level_override: None,
        statistics_period: statistics_period(
            overrides.statistics_period_seconds,
            file.as_ref().and_then(|f| f.statistics),
        ),
        handle_device_renaming: file.as_ref().is_none_or(|f| f.handle_device_renaming),
    };
    Ok(Resolved {
        settings,
        config,
        warnings: file.map(|f| f.warnings).unwrap_or_default(),
    })
}

/// The flag (0: off), else `thingsboard.statistics`, else on every 60 s as in the gateway.
fn statistics_period(flag: Option<u64>, file: Option<StatisticsSetting>) -> Option<Duration> {
    match (flag, file) {
        (Some(0), _) => None,
        (Some(seconds), _) => Some(Duration::from_secs(seconds)),
        (None, Some(StatisticsSetting { enabled: false, .. })) => None,
        (
            None,
            Some(StatisticsSetting {
                period_seconds: Some(seconds),
                ..
            }),
        ) => Some(Duration::from_secs(seconds)),
        (None, _) => Some(statistics::DEFAULT_PERIOD),
    }
}

/// Flags win over the file; several kinds of credentials on the command line are an error.
fn auth(
    overrides: &Overrides,
    file: Option<&Credentials>,
) -> Result<(Auth, Option<String>), String> {
    let secret = |value: &Option<String>, file: &Option<PathBuf>, what: &str| match (value, file) {
        (Some(_), Some(_)) => Err(format!("give the {what} as a value or as a file, not both")),
        (Some(value), None) => Ok(Some(Secret::Value(value.clone()))),
        (None, Some(path)) => Ok(Some(Secret::File(path.clone()))),
        (None, None) => Ok(None),
    };
    let token = secret(&overrides.token, &overrides.token_file, "access token")?;
    let password = secret(&overrides.password, &overrides.password_file, "password")?;
    let basic = overrides.username.is_some() || password.is_some();
    let x509 = overrides.client_cert.is_some() || overrides.client_key.is_some();
    if [token.is_some(), basic, x509]
        .iter()
        .filter(|set| **set)
        .count()
        > 1
    {
        return Err("give one kind of ThingsBoard credentials: an access token (--token, --token-file), a username and password (--tb-username, --tb-password), or a client certificate (--tb-client-cert, --tb-client-key)".to_owned());
    }
    if let Some(token) = token {
        return Ok((Auth::AccessToken(token), None));
    }
    if basic {
        return Ok((
            Auth::UsernamePassword {
                username: overrides.username.clone().map(Secret::Value),
                password,
            },
            None,
        ));
    }
    if x509 {
        return Ok((Auth::X509, None));
    }
    match file {
        Some(Credentials::AccessToken(token)) => Ok((Auth::AccessToken(Secret::Value(token.clone())), None)),
        Some(Credentials::UsernamePassword {
            client_id,
            username,
            password,
        }) => Ok((
            Auth::UsernamePassword {
                username: username.clone().map(Secret::Value),
                password: password.clone().map(Secret::Value),
            },
            client_id.clone(),
        )),
        Some(Credentials::X509) => Ok((Auth::X509, None)),
        None => Err("no ThingsBoard credentials: give --token (or TB_ACCESS_TOKEN, --token-file), --tb-username and --tb-password, --tb-client-cert and --tb-client-key, or --gateway-config with a security section".to_owned()),
    }
}

/// TLS whenever a CA or client certificate is given, the file asks for it, `--tb-tls`, or port
/// 8883, as ThingsBoard's gateway does.
fn tls(
    overrides: &Overrides,
    file: Option<TlsFiles>,
    port: u16,
    auth: &Auth,
) -> Result<Option<TlsFiles>, String> {
    let client = match (&overrides.client_cert, &overrides.client_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => return Err("--tb-client-cert and --tb-client-key go together".to_owned()),
    };
    let wanted = overrides.tls
        || overrides.ca_cert.is_some()
        || client.is_some()
        || file.is_some()
        || port == TLS_PORT;
    if !wanted {
        return Ok(None);
    }
    let file = file.unwrap_or_default();
    let files = TlsFiles {
        ca_cert: overrides.ca_cert.clone().or(file.ca_cert),
        client: client.or(file.client),
    };
    if *auth == Auth::X509 && files.client.is_none() {
        return Err("X.509 authentication needs the client certificate and key (--tb-client-cert, --tb-client-key)".to_owned());
    }
    Ok(Some(files))
}

/// Flags win; else the file's storage: memory, or file/sqlite as the disk queue.
fn queue(overrides: &Overrides, file: Option<StorageChoice>) -> QueueSettings {
    let (directory, file_max) = match (&overrides.queue_directory, file) {
        (Some(directory), _) => (Some(directory.clone()), None),
        (
            None,
            Some(StorageChoice::Disk {
                directory,
                max_bytes,
            }),
        ) => (Some(directory), max_bytes),
        (None, Some(StorageChoice::Memory { max_bytes })) => (None, max_bytes),
        (None, None) => (None, None),
    };
    let (storage, default_max) = match directory {
        Some(directory) => (
            Storage::Disk {
                directory,
                fsync: overrides.queue_fsync,
            },
            DEFAULT_DISK_QUEUE,
        ),
        None => (Storage::Memory, DEFAULT_MEMORY_QUEUE),
    };
    QueueSettings {
        storage,
        max_bytes: overrides
            .queue_max_bytes
            .or(file_max)
            .unwrap_or(default_max)
            .max(1),
        full_policy: overrides.queue_full_policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides() -> Overrides {
        Overrides {
            config: Some("socket.json".into()),
            keep_alive: Duration::from_secs(60),
            queue_fsync: Fsync::Every(Duration::from_secs(1)),
            ..Overrides::default()
        }
    }

    fn gateway_file(
        security: serde_json::Value,
        extra: serde_json::Value,
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tb_gateway.json");
        let mut file = serde_json::json!({"thingsboard": {"host": "tb.example", "port": 8883, "security": security,
            "maxPayloadSizeBytes": 16384, "qos": 0},
            "connectors": [{"type": "socket", "name": "Line 1", "configuration": "socket.json"}]});
        if let (Some(file), Some(extra)) = (file.as_object_mut(), extra.as_object()) {
            file.extend(extra.clone());
        }
        std::fs::write(&path, file.to_string()).unwrap();
        (dir, path)
    }

    #[test]
    fn the_gateway_file_gives_everything_and_flags_override_it() {
        let (dir, path) = gateway_file(
            serde_json::json!({"type": "tlsAccessToken", "accessToken": "from-file", "caCert": "ca.pem"}),
            serde_json::json!({"storage": {"type": "sqlite", "data_file_path": "./data/gateway.db"}}),
        );
        let from_file = resolve(
            Overrides {
                gateway_config: Some(path.clone()),
                config: None,
                ..overrides()
            },
            1,
        )
        .unwrap();
        let mqtt = &from_file.settings.mqtt;
        assert_eq!(from_file.config, dir.path().join("socket.json"));
        assert_eq!((mqtt.host.as_str(), mqtt.port), ("tb.example", 8883));
        assert_eq!(
            mqtt.auth,
            Auth::AccessToken(Secret::Value("from-file".into()))
        );
        assert_eq!(
            mqtt.tls.as_ref().unwrap().ca_cert,
            Some(dir.path().join("ca.pem"))
        );
        assert_eq!(
            (mqtt.qos, mqtt.max_payload),
            (rumqttc::QoS::AtMostOnce, 16384)
        );
        assert_eq!(from_file.settings.connector_name.as_deref(), Some("Line 1"));
        assert_eq!(
            from_file.settings.queue.storage,
            Storage::Disk {
                directory: dir.path().join("./data"),
                fsync: Fsync::Every(Duration::from_secs(1))
            }
        );
        let overridden = resolve(
            Overrides {
                gateway_config: Some(path),
                host: Some("other".into()),
                token_file: Some("/run/secrets/token".into()),
                queue_directory: Some("/var/lib/q".into()),
                ..overrides()
            },
            1,
        )
        .unwrap();
        let mqtt = &overridden.settings.mqtt;
        assert_eq!(mqtt.host, "other");
        assert_eq!(
            mqtt.auth,
            Auth::AccessToken(Secret::File("/run/secrets/token".into()))
        );
        assert!(mqtt
            .watched_files()
            .contains(&PathBuf::from("/run/secrets/token")));
        assert_eq!(
            overridden.settings.queue.storage,
            Storage::Disk {
                directory: "/var/lib/q".into(),
                fsync: Fsync::Every(Duration::from_secs(1))
            }
        );
    }

    /// Resolves a tb_gateway.json whose `thingsboard` section has `extra` keys, under `flags`.
    fn resolve_with_thingsboard_keys(
        extra: serde_json::Value,
        flags: Overrides,
    ) -> Result<Resolved, String> {
        let (_dir, path) = gateway_file(
            serde_json::json!({"type": "accessToken", "accessToken": "t"}),
            serde_json::json!({}),
        );
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if let (Some(tb), Some(extra)) = (file["thingsboard"].as_object_mut(), extra.as_object()) {
            tb.extend(extra.clone());
        }
        std::fs::write(&path, file.to_string()).unwrap();
        resolve(
            Overrides {
                gateway_config: Some(path),
                config: None,
                ..flags
            },
            1,
        )
    }

    #[test]
    fn statistics_are_on_every_minute_unless_the_file_or_the_flag_says_otherwise() {
        let period = |extra: serde_json::Value, flag: Option<u64>| {
            resolve_with_thingsboard_keys(
                extra,
                Overrides {
                    statistics_period_seconds: flag,
                    ..overrides()
                },
            )
            .unwrap()
            .settings
            .statistics_period
        };
        let seconds = |s| Some(Duration::from_secs(s));
        assert_eq!(period(serde_json::json!({}), None), seconds(60));
        let off = serde_json::json!({"statistics": {"enable": false}});
        assert_eq!(period(off.clone(), None), None);
        assert_eq!(period(off, Some(5)), seconds(5));
        let fast = serde_json::json!({"statistics": {"statsSendPeriodInSeconds": 3}});
        assert_eq!(period(fast, None), seconds(10), "the gateway's minimum");
        assert_eq!(period(serde_json::json!({}), Some(0)), None);
    }

    #[test]
    fn remote_configuration_from_the_file_or_the_flag() {
        let remote = |extra: serde_json::Value, flags: Overrides| {
            resolve_with_thingsboard_keys(extra, flags)
                .unwrap()
                .settings
                .remote_configuration
        };
        assert_eq!(remote(serde_json::json!({}), overrides()), None);
        let on = remote(
            serde_json::json!({"remoteConfiguration": true}),
            overrides(),
        )
        .expect("on from the file");
        assert!(on.config_file.ends_with("socket.json"), "{on:?}");
        let flag = Overrides {
            remote_configuration: true,
            ..overrides()
        };
        assert!(remote(serde_json::json!({"remoteConfiguration": false}), flag).is_some());
    }

    #[test]
    fn batching_comes_from_min_pack_settings_and_is_bounded() {
        let batching = |extra: serde_json::Value, flags: Overrides| {
            resolve_with_thingsboard_keys(extra, flags).map(|resolved| resolved.settings.batching)
        };
        assert_eq!(
            batching(serde_json::json!({}), overrides()).unwrap(),
            Batching::default()
        );
        let from_file = serde_json::json!({"minPackSendDelayMS": 50, "minPackSizeToSend": 500});
        assert_eq!(
            batching(from_file.clone(), overrides()).unwrap(),
            Batching {
                linger: Some(Duration::from_millis(50)),
                max_messages: 500
            }
        );
        let flags = Overrides {
            min_pack_send_delay_ms: Some(0),
            ..overrides()
        };
        assert_eq!(
            batching(from_file, flags).unwrap(),
            Batching {
                linger: Some(Duration::ZERO),
                max_messages: 500
            }
        );
        let error =
            batching(serde_json::json!({"minPackSendDelayMS": 5000}), overrides()).unwrap_err();
        assert!(error.contains("minPackSendDelayMS 5000"), "{error}");
    }

    #[test]
    fn credentials_come_from_one_place() {
        let error = resolve(
            Overrides {
                token: Some("t".into()),
                username: Some("u".into()),
                ..overrides()
            },
            1,
        )
        .unwrap_err();
        assert!(
            error.starts_with("give one kind of ThingsBoard credentials"),
            "{error}"
        );
        let error = resolve(overrides(), 1).unwrap_err();
        assert!(error.contains("--token"), "{error}");
        let error = resolve(
            Overrides {
                token: Some("t".into()),
                token_file: Some("f".into()),
                ..overrides()
            },
            1,
        )
        .unwrap_err();
        assert_eq!(
            error,
            "give the access token as a value or as a file, not both"
        );
    }

    #[test]
    fn tls_is_on_for_a_ca_a_client_certificate_or_port_8883() {
        let plain = resolve(
            Overrides {
                token: Some("t".into()),
                ..overrides()
            },
            1,
        )
        .unwrap();
        assert_eq!(plain.settings.mqtt.tls, None);
        let port = resolve(
            Overrides {
                token: Some("t".into()),
                port: Some(8883),
                ..overrides()
            },
            1,
        )
        .unwrap();
        assert_eq!(port.settings.mqtt.tls, Some(TlsFiles::default()));
        let x509 = resolve(
            Overrides {
                client_cert: Some("gw.pem".into()),
                client_key: Some("gw.key".into()),
                ca_cert: Some("ca.pem".into()),
                ..overrides()
            },
            1,
        )
        .unwrap();
        assert_eq!(x509.settings.mqtt.auth, Auth::X509);
        assert_eq!(
            x509.settings.mqtt.tls,
            Some(TlsFiles {
                ca_cert: Some("ca.pem".into()),
                client: Some(("gw.pem".into(), "gw.key".into()))
            })
        );
        assert_eq!(x509.settings.mqtt.watched_files().len(), 3);
        let half = resolve(
            Overrides {
                client_cert: Some("gw.pem".into()),
                ..overrides()
            },
            1,
        )
        .unwrap_err();
        assert_eq!(half, "--tb-client-cert and --tb-client-key go together");
    }

    #[test]
    fn the_basic_credentials_client_id_is_used_unless_a_flag_gives_one() {
        let (_dir, path) = gateway_file(
            serde_json::json!({"type": "usernamePassword", "clientId": "gw-7", "username": "u", "password": "p"}),
            serde_json::json!({}),
        );
        let resolved = resolve(
            Overrides {
                gateway_config: Some(path.clone()),
                ..overrides()
            },
            1,
        )
        .unwrap();
        assert_eq!(resolved.settings.mqtt.client_id, "gw-7");
        let flagged = resolve(
            Overrides {
                gateway_config: Some(path),
                client_id: Some("mine".into()),
                ..overrides()
            },
            1,
        )
        .unwrap();
        assert_eq!(flagged.settings.mqtt.client_id, "mine");
    }
}
