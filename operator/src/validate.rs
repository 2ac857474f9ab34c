//! Validation of a `SocketConnector` spec, pure: the connector's own config loader checks the
//! embedded configuration, and the operator checks what only Kubernetes needs (distinct gateway
//! identities). The result is the plan the builders render.

use std::collections::BTreeSet;

use connector_core::config::{ConnectorConfig, SocketKind};
use connector_core::load::load_value;
use sha2::{Digest, Sha256};

use crate::crd::{KeyRef, QueueSpec, SecretKeyRef, SocketConnectorSpec, ThingsBoardSpec};
use crate::failure::Failure;

pub const DEFAULT_METRICS_PORT: i32 = 9100;
pub const DEFAULT_TB_PORT: i32 = 1883;
/// ThingsBoard's MQTT-over-TLS port.
pub const DEFAULT_TB_TLS_PORT: i32 = 8883;

/// Why a spec cannot be rolled out ([`SpecError::failure`] names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The connector configuration fails the connector's own checks.
    #[error("spec.connector.{0}")]
    InvalidConfig(String),
    /// Two replicas would share one access token.
    #[error("replicas {first} and {second} use the same access token (Secret {secret}, key {key}); ThingsBoard would drop one session whenever the other connects")]
    DuplicateAccessToken {
        first: usize,
        second: usize,
        secret: String,
        key: String,
    },
    /// Credentials or TLS settings that cannot work together (the CRD's CEL rules stop the
    /// commonest first).
    #[error("spec.thingsboard: {0}")]
    InvalidCredentials(String),
    /// More replicas than access tokens (the CRD's CEL rule normally stops this first).
    #[error("replicas is {replicas} but only {tokens} access token(s) are given; add thingsboard.additionalAccessTokens")]
    NotEnoughAccessTokens { replicas: usize, tokens: usize },
    /// Queue settings the connector would refuse (the CRD schema normally stops these first).
    #[error("spec.queue.{0}")]
    InvalidQueue(String),
    /// The memory limit is smaller than what the queue holds: the pod would be OOM-killed in an
    /// outage, losing a memory queue.
    #[error("spec.resources.limits.memory is {limit_mib} MiB, but the connector with this queue needs at least {needed_mib} MiB ({queue}); raise the limit, lower spec.queue.maxBytes or use spec.queue.persistence")]
    QueueExceedsMemory {
        limit_mib: u64,
        needed_mib: u64,
        queue: String,
    },
    /// A CIDR of `spec.networkPolicy` that does not parse.
    #[error("spec.networkPolicy.{field}[{index}]: {value:?} is not a CIDR such as 10.20.0.0/16 or fd00::/64")]
    InvalidNetworkPolicy {
        field: &'static str,
        index: usize,
        value: String,
    },
    /// The rendered `socket.json` does not fit in a ConfigMap.
    #[error("spec.connector renders to {bytes} bytes of socket.json, more than the {MAX_CONFIG_BYTES} a ConfigMap holds; split the devices over several SocketConnectors")]
    ConfigTooLarge { bytes: usize },
}

/// What the rendered `socket.json` may weigh: a ConfigMap holds 1 MiB, and the change time of
/// remote configuration and the object's metadata share it.
pub const MAX_CONFIG_BYTES: usize = 1_000_000;

impl SpecError {
    pub fn failure(&self) -> Failure {
        match self {
            Self::InvalidConfig(_) | Self::ConfigTooLarge { .. } => Failure::InvalidConfig,
            Self::DuplicateAccessToken { .. } => Failure::DuplicateAccessToken,
            Self::NotEnoughAccessTokens { .. } => Failure::NotEnoughAccessTokens,
            Self::InvalidCredentials(_) => Failure::InvalidCredentials,
            Self::InvalidQueue(_) => Failure::InvalidQueue,
            Self::QueueExceedsMemory { .. } => Failure::QueueExceedsMemory,
            Self::InvalidNetworkPolicy { .. } => Failure::InvalidNetworkPolicy,
        }
    }
}

/// One connector pod: its gateway identity in ThingsBoard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub index: usize,
    pub credential: Credential,
    pub client_id: String,
}

/// How one pod proves itself to ThingsBoard; the secret parts stay in their Secrets and reach
/// the pod as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    AccessToken(SecretKeyRef),
    UsernamePassword {
        username: String,
        password: SecretKeyRef,
    },
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`).
    ClientCertificate {
        secret_name: String,
    },
}

/// The key of a `kubernetes.io/tls` Secret holding the certificate, and the key.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

impl Credential {
    /// The Secret keys the pod mounts: (secret, key, what it is for).
    pub fn secret_keys(&self) -> Vec<(&str, &str, &'static str)> {
        match self {
            Self::AccessToken(token) => vec![(&token.name, &token.key, "access token")],
            Self::UsernamePassword { password, .. } => {
                vec![(&password.name, &password.key, "MQTT password")]
            }
            Self::ClientCertificate { secret_name } => vec![
                (secret_name, TLS_CERT_KEY, "client certificate"),
                (secret_name, TLS_KEY_KEY, "client certificate key"),
            ],
        }
    }
}

/// Where the CA certificate of ThingsBoard's server comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    Secret(KeyRef),
    ConfigMap(KeyRef),
}

/// TLS towards ThingsBoard; without a CA the system's CAs check the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    pub ca: Option<CaSource>,
}

/// What the builders need, derived once from a valid spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The `socket.json` the pods read.
    pub config_json: String,
    /// `sha256:<hex>` of `config_json` and the ThingsBoard settings: what the status reports.
    pub config_hash: String,
    /// `sha256:<hex>` of what the connector cannot hot-reload (the `socket` section, name, log
    /// settings, ThingsBoard and queue settings): the pods roll when it changes. Device changes
    /// only update the ConfigMap, which the running connector reloads.
    pub restart_hash: String,
    pub identities: Vec<Identity>,
    /// ThingsBoard's MQTT port.
    pub thingsboard_port: i32,
    pub tls: Option<TlsPlan>,
    pub port: u16,
    pub protocol: &'static str,
    pub metrics_port: i32,
    pub devices: usize,
    pub paused: bool,
    /// The config loader's warnings (unknown keys and the like).
    pub warnings: Vec<String>,
    /// The container's memory limit when the spec gives none: enough for the queue.
    pub memory_limit: String,
}

/// What the connector needs besides its queue: the runtime, the MQTT client, buffers and a few
/// thousand device connections (a full 64 MiB memory queue peaked at 94 MiB RSS with the
/// image's binary: docs/reliability.md).
const BASE_MEMORY: u64 = 48 << 20;
/// What a disk queue holds in memory: a 4 MiB cache of recent payloads and fjall's caches
/// (replaying a 1 GiB queue peaked at 25 MiB RSS).
const DISK_QUEUE_MEMORY: u64 = 16 << 20;
/// The memory limit of a connector pod unless its queue needs more.
pub const DEFAULT_MEMORY_LIMIT: u64 = 128 << 20;
/// Default queue sizes (the connector's own defaults).
const DEFAULT_MEMORY_QUEUE: u64 = 64 << 20;
const DEFAULT_DISK_QUEUE: u64 = 1 << 30;
/// A disk queue needs room beside its records (journal, compaction): at most half the claim.
const CLAIM_SHARE: u64 = 2;

/// Checks a spec and derives the plan. `name`/`namespace` make the MQTT client ids unique.
pub fn validate(
    spec: &SocketConnectorSpec,
    namespace: &str,
    name: &str,
) -> Result<Plan, SpecError> {
    // The document as written, with the connector's loader: its warnings name the keys it
    // ignores, as the connector's own log would.
    let written = load_value(spec.connector.0.clone())
        .map_err(|e| SpecError::InvalidConfig(e.to_string()))?;
    let config = pod_config(&written.config);
    let value = serde_json::to_value(&config)
        .map_err(|e| SpecError::InvalidConfig(format!("(root): {e}")))?;
    let loaded = load_value(value).map_err(|e| SpecError::InvalidConfig(e.to_string()))?;

    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let credentials = credentials(&spec.thingsboard, replicas)?;
    let identities = credentials
        .into_iter()
        .enumerate()
        .map(|(index, credential)| Identity {
            index,
            credential,
            client_id: spec
                .thingsboard
                .username_password
                .as_ref()
                .and_then(|basic| basic.client_id.clone())
                .unwrap_or_else(|| format!("{namespace}.{name}-{index}")),
        })
        .collect();
    let tls = tls(&spec.thingsboard)?;
    let thingsboard_port = spec.thingsboard.port.unwrap_or(if tls.is_some() {
        DEFAULT_TB_TLS_PORT
    } else {
        DEFAULT_TB_PORT
    });

    if let Some(queue) = &spec.queue {
        check_queue(queue)?;
    }
    if let Some(policy) = &spec.network_policy {
        check_cidrs("thingsboardCIDRs", &policy.thingsboard_cidrs)?;
        check_cidrs("deviceCIDRs", &policy.device_cidrs)?;
    }
    let memory_limit = check_memory(spec)?;
    // Compact: a pretty-printed large configuration is several times its spec.
    let config_json = serde_json::to_string(&loaded.config)
        .map_err(|e| SpecError::InvalidConfig(format!("(root): {e}")))?;
    check_device_tls_files(&loaded.config, spec)?;
    if config_json.len() > MAX_CONFIG_BYTES {
        return Err(SpecError::ConfigTooLarge {
            bytes: config_json.len(),
        });
    }
    let thingsboard = serde_json::to_string(&spec.thingsboard).unwrap_or_default();
    let config_hash = sha256(&[&config_json, &thingsboard]);
    let not_reloadable = serde_json::json!({
        "socket": &loaded.config.socket,
        "name": &loaded.config.name,
        "queue": &spec.queue,
    });
    let restart_hash = sha256(&[&not_reloadable.to_string(), &thingsboard]);
    Ok(Plan {
        config_json,
        config_hash,
        restart_hash,
        identities,
        thingsboard_port,
        tls,
        port: loaded.config.socket.port,
        protocol: match loaded.config.socket.kind {
            SocketKind::Tcp => "TCP",
            SocketKind::Udp => "UDP",
        },
        metrics_port: spec.metrics_port.unwrap_or(DEFAULT_METRICS_PORT),
        devices: loaded.config.devices.len(),
        paused: spec.paused.unwrap_or(false) || replicas == 0,
        warnings: written.warnings,
        memory_limit,
    })
}

/// Each entry an address and a prefix length that fits it (`10.0.0.0/8`, `fd00::/64`).
fn check_cidrs(field: &'static str, cidrs: &[String]) -> Result<(), SpecError> {
    for (index, cidr) in cidrs.iter().enumerate() {
        let parsed = cidr.split_once('/').and_then(|(address, prefix)| {
            let address: std::net::IpAddr = address.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let bits = if address.is_ipv4() { 32 } else { 128 };
            (prefix <= bits).then_some(())
        });
        if parsed.is_none() {
            return Err(SpecError::InvalidNetworkPolicy {
                field,
                index,
                value: cidr.clone(),
            });
        }
    }
    Ok(())
}

/// One credential per pod: distinct access tokens for replicas; basic credentials and client
/// certificates are one gateway identity, so one pod.
fn credentials(tb: &ThingsBoardSpec, replicas: usize) -> Result<Vec<Credential>, SpecError> {
    let invalid = |message: &str| Err(SpecError::InvalidCredentials(message.to_owned()));
    let kinds = usize::from(tb.access_token.is_some())
        + usize::from(tb.username_password.is_some())
        + usize::from(tb.client_certificate.is_some());
    if kinds != 1 {
        return invalid("give exactly one of accessToken, usernamePassword and clientCertificate");
    }
    if tb.access_token.is_none() && !tb.additional_access_tokens.is_empty() {
        return invalid("additionalAccessTokens go with accessToken");
    }
    let single = |credential: Credential| {
        if replicas > 1 {
            invalid("replicas > 1 needs one access token per replica (accessToken and additionalAccessTokens); usernamePassword and clientCertificate are one gateway identity, which ThingsBoard lets connect once")
        } else {
            Ok(vec![credential])
        }
    };
    if let Some(basic) = &tb.username_password {
        return single(Credential::UsernamePassword {
            username: basic.username.clone(),
            password: basic.password.clone(),
        });
    }
    if let Some(certificate) = &tb.client_certificate {
        return single(Credential::ClientCertificate {
            secret_name: certificate.secret_name.clone(),
        });
    }
    let tokens: Vec<&SecretKeyRef> = tb
        .access_token
        .iter()
        .chain(&tb.additional_access_tokens)
        .collect();
    if replicas > tokens.len() {
        return Err(SpecError::NotEnoughAccessTokens {
            replicas,
            tokens: tokens.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for (index, token) in tokens.iter().enumerate().take(replicas.max(1)) {
        if !seen.insert(*token) {
            let first = tokens.iter().position(|t| t == token).unwrap_or_default();
            return Err(SpecError::DuplicateAccessToken {
                first,
                second: index,
                secret: token.name.clone(),
                key: token.key.clone(),
            });
        }
    }
    Ok(tokens
        .into_iter()
        .take(replicas.max(1))
        .map(|token| Credential::AccessToken(token.clone()))
        .collect())
}

/// TLS is on with a CA, a client certificate, port 8883 or `tls.enabled`; turning it off
/// explicitly while asking for one of those is a contradiction, not a guess.
fn tls(tb: &ThingsBoardSpec) -> Result<Option<TlsPlan>, SpecError> {
    let spec = tb.tls.clone().unwrap_or_default();
    let ca = match &spec.ca {
        None => None,
        Some(ca) => match (&ca.secret, &ca.config_map) {
            (Some(secret), None) => Some(CaSource::Secret(secret.clone())),
            (None, Some(config_map)) => Some(CaSource::ConfigMap(config_map.clone())),
            _ => {
                return Err(SpecError::InvalidCredentials(
                    "tls.ca needs exactly one of secret and configMap".to_owned(),
                ))
            }
        },
    };
    let implied =
        ca.is_some() || tb.client_certificate.is_some() || tb.port == Some(DEFAULT_TB_TLS_PORT);
    match spec.enabled {
        Some(false) if implied => Err(SpecError::InvalidCredentials(
            "tls.enabled is false, but a CA, a client certificate or port 8883 needs TLS"
                .to_owned(),
        )),
        Some(true) => Ok(Some(TlsPlan { ca })),
        _ if implied => Ok(Some(TlsPlan { ca })),
        _ => Ok(None),
    }
}

/// The memory the connector needs with its queue settings, checked against the spec's limit;
/// returns the limit to render when the spec gives none.
fn check_memory(spec: &SocketConnectorSpec) -> Result<String, SpecError> {
    let queue = spec.queue.clone().unwrap_or_default();
    let (needed, described) = if queue.persistence.is_some() {
        (BASE_MEMORY + DISK_QUEUE_MEMORY, "a disk queue".to_owned())
    } else {
        let bytes = queue
            .max_bytes
            .map_or(DEFAULT_MEMORY_QUEUE, |b| b.max(1) as u64);
        (
            BASE_MEMORY + bytes,
            format!("a memory queue of {} MiB", bytes.div_ceil(1 << 20)),
        )
    };
    let needed_mib = needed.div_ceil(1 << 20);
    let limit = spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|limits| limits.get("memory"));
    match limit {
        Some(limit) => {
            let bytes = parse_quantity(&limit.0).ok_or_else(|| {
                SpecError::InvalidQueue(format!(
                    "cannot read spec.resources.limits.memory {:?}",
                    limit.0
                ))
            })?;
            if bytes < needed {
                return Err(SpecError::QueueExceedsMemory {
                    limit_mib: bytes / (1 << 20),
                    needed_mib,
                    queue: described,
                });
            }
            Ok(limit.0.clone())
        }
        None => Ok(format!("{}Mi", needed_mib.max(DEFAULT_MEMORY_LIMIT >> 20))),
    }
}

/// A Kubernetes quantity in bytes (`128Mi`, `1Gi`, `500M`, `1.5Gi`, `134217728`, `1e9`); a
/// milli quantity (`128m`, a fraction of a byte) is refused.
pub fn parse_quantity(text: &str) -> Option<u64> {
    if text.trim().ends_with('m') {
        return None;
    }
    quantity_value(text).map(|value| value as u64)
}

/// A Kubernetes CPU quantity in cores (`500m`, `2`, `1.5`, `2k`).
pub fn parse_cpu(text: &str) -> Option<f64> {
    quantity_value(text)
}

/// The value of a Kubernetes quantity: a number with a binary (`Ki`…`Ti`) or decimal (`m`, `k`…`T`)
/// suffix, or an exponent.
fn quantity_value(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * factor)
}

/// Queue settings, checked by the connector's own parsers, so the operator never renders flags
/// the pod refuses.
fn check_queue(queue: &QueueSpec) -> Result<(), SpecError> {
    if let Some(policy) = &queue.full_policy {
        policy
            .parse::<connector_core::settings::FullPolicy>()
            .map_err(|e| SpecError::InvalidQueue(format!("fullPolicy: {e}")))?;
    }
    if let Some(fsync) = &queue.fsync {
        fsync
            .parse::<connector_core::settings::Fsync>()
            .map_err(|e| SpecError::InvalidQueue(format!("fsync: {e}")))?;
    }
    if queue.max_bytes.is_some_and(|bytes| bytes < 1) {
        return Err(SpecError::InvalidQueue(
            "maxBytes: must be at least 1".to_owned(),
        ));
    }
    if let Some(persistence) = &queue.persistence {
        let size = persistence.size.as_deref().unwrap_or("2Gi");
        let claim = parse_quantity(size).ok_or_else(|| {
            SpecError::InvalidQueue(format!("persistence.size: cannot read {size:?}"))
        })?;
        let max_bytes = queue.max_bytes.map_or(DEFAULT_DISK_QUEUE, |b| b as u64);
        if max_bytes > claim / CLAIM_SHARE {
            return Err(SpecError::InvalidQueue(format!(
                "maxBytes: {max_bytes} bytes need a claim of at least twice that (the store needs room for its journal and compaction); persistence.size is {size}"
            )));
        }
    }
    Ok(())
}

fn sha256(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The configuration as a pod runs it: it must listen on every interface, or the Service cannot
/// reach it (a `127.0.0.1` copied from a ThingsBoard `socket.json` is the classic trap).
/// The device-side TLS files (`socket.tls`) must be in a volume the pod mounts: otherwise the pod
/// crash-loops on a missing file.
fn check_device_tls_files(
    config: &ConnectorConfig,
    spec: &SocketConnectorSpec,
) -> Result<(), SpecError> {
    let Some(tls) = &config.socket.tls else {
        return Ok(());
    };
    let mounts: Vec<&str> = spec
        .pod
        .iter()
        .flat_map(|pod| &pod.volume_mounts)
        .map(|mount| mount.mount_path.trim_end_matches('/'))
        .collect();
    let files = [
        ("certFile", Some(&tls.cert_file)),
        ("keyFile", Some(&tls.key_file)),
        ("clientCaFile", tls.client_ca_file.as_ref()),
    ];
    for (key, file) in files {
        let Some(file) = file else { continue };
        let mounted = mounts.iter().any(|mount| {
            file.strip_prefix(mount)
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if !mounted {
            return Err(SpecError::InvalidConfig(format!(
                "socket.tls.{key}: {file} is in no volume the pod mounts; add the Secret with the device TLS files to spec.pod.volumes and spec.pod.volumeMounts"
            )));
        }
    }
    Ok(())
}

fn pod_config(config: &ConnectorConfig) -> ConnectorConfig {
    let mut config = config.clone();
    let ipv6 = config
        .socket
        .address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_ipv6());
    config.socket.address = if ipv6 { "::" } else { "0.0.0.0" }.to_owned();
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn valid_spec_gives_a_plan() {
        let spec = fixtures::tcp_spec();
        let plan = validate(&spec, "plant", "line-1").unwrap();
        assert_eq!(plan.port, 50000);
        assert_eq!(plan.protocol, "TCP");
        assert_eq!(plan.devices, 1);
        assert!(plan.config_json.contains("\"address\":\"0.0.0.0\""));
        assert_eq!(plan.identities[0].client_id, "plant.line-1-0");
        assert!(plan.config_hash.starts_with("sha256:"));
    }

    #[test]
    fn the_config_map_is_compact_and_one_that_cannot_fit_is_refused() {
        let mut spec = fixtures::tcp_spec();
        let device = spec.connector.0["devices"][0].clone();
        let devices = |count: usize, name_length: usize| -> serde_json::Value {
            (0..count)
                .map(|n| {
                    let mut device = device.clone();
                    device["deviceName"] = format!("{n:05}{}", "x".repeat(name_length)).into();
                    device
                })
                .collect::<Vec<_>>()
                .into()
        };
        spec.connector.0["devices"] = devices(100, 10);
        let plan = validate(&spec, "ns", "n").expect("valid");
        let written = serde_json::to_string(&spec.connector.0).unwrap().len();
        assert!(
            plan.config_json.len() < written * 3 / 2,
            "{} bytes rendered from {written}",
            plan.config_json.len()
        );
        spec.connector.0["devices"] = devices(200, MAX_CONFIG_BYTES / 150);
        let error = validate(&spec, "ns", "n").unwrap_err();
        assert!(matches!(error, SpecError::ConfigTooLarge { .. }), "{error}");
        assert_eq!(error.failure(), Failure::InvalidConfig);
        assert!(error.to_string().contains("split the devices"), "{error}");
    }

    #[test]
    fn device_tls_files_must_be_in_a_mounted_volume() {
        let mut spec = fixtures::pod_settings_spec();
        assert!(validate(&spec, "ns", "n").is_ok());
        spec.pod.as_mut().unwrap().volume_mounts.clear();
        let error = validate(&spec, "ns", "n").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "spec.connector.socket.tls.certFile: /etc/device-tls/tls.crt is in no volume"
            ),
            "{error}"
        );
    }

    #[test]
    fn config_errors_carry_the_json_path() {
        let mut spec = fixtures::tcp_spec();
        spec.connector.0["devices"][0]
            .as_object_mut()
            .expect("device")
            .remove("address");
        let error = validate(&spec, "ns", "n").unwrap_err();
        assert_eq!(error.failure(), Failure::InvalidConfig);
        assert!(
            error
                .to_string()
                .starts_with("spec.connector.devices[0].address: missing"),
            "{error}"
        );
    }

    #[test]
    fn replicas_need_distinct_tokens() {
        let mut spec = fixtures::tcp_spec();
        spec.replicas = Some(2);
        assert_eq!(
            validate(&spec, "ns", "n").unwrap_err().failure(),
            Failure::NotEnoughAccessTokens
        );
        spec.thingsboard.additional_access_tokens =
            vec![spec.thingsboard.access_token.clone().unwrap()];
        assert_eq!(
            validate(&spec, "ns", "n").unwrap_err().failure(),
            Failure::DuplicateAccessToken
        );
        spec.thingsboard.additional_access_tokens[0].key = "other".into();
        let plan = validate(&spec, "ns", "n").unwrap();
        assert_eq!(plan.identities.len(), 2);
        assert_ne!(plan.identities[0].client_id, plan.identities[1].client_id);
    }

    #[test]
    fn one_kind_of_credentials_and_tls_that_fits() {
        let token = fixtures::tcp_spec();
        let plan = validate(&token, "ns", "n").unwrap();
        assert_eq!(plan.tls, None);
        assert_eq!(plan.thingsboard_port, DEFAULT_TB_PORT);

        let x509 = fixtures::x509_spec();
        let plan = validate(&x509, "ns", "n").unwrap();
        assert_eq!(
            plan.identities[0].credential,
            Credential::ClientCertificate {
                secret_name: "line-1-gateway-cert".to_owned()
            }
        );
        assert!(matches!(
            plan.tls,
            Some(TlsPlan {
                ca: Some(CaSource::ConfigMap(_))
            })
        ));
        assert_eq!(
            plan.thingsboard_port, DEFAULT_TB_TLS_PORT,
            "TLS defaults to 8883"
        );

        let invalid = |spec: &SocketConnectorSpec| {
            let error = validate(spec, "ns", "n").unwrap_err();
            assert_eq!(error.failure(), Failure::InvalidCredentials);
            error.to_string()
        };
        let mut both = x509.clone();
        both.thingsboard.access_token = token.thingsboard.access_token.clone();
        assert_eq!(
            invalid(&both),
            "spec.thingsboard: give exactly one of accessToken, usernamePassword and clientCertificate"
        );
        let mut plain = x509.clone();
        plain.thingsboard.tls.as_mut().unwrap().enabled = Some(false);
        assert!(invalid(&plain).contains("tls.enabled is false"));
        let mut replicated = x509.clone();
        replicated.replicas = Some(2);
        assert!(invalid(&replicated).starts_with("spec.thingsboard: replicas > 1"));
        let mut two_cas = x509.clone();
        two_cas
            .thingsboard
            .tls
            .as_mut()
            .unwrap()
            .ca
            .as_mut()
            .unwrap()
            .secret = Some(crate::crd::KeyRef {
            name: "ca".to_owned(),
            key: "ca.crt".to_owned(),
        });
        assert!(invalid(&two_cas).contains("exactly one of secret and configMap"));

        let mut basic = token.clone();
        basic.thingsboard.access_token = None;
        basic.thingsboard.username_password = Some(crate::crd::UsernamePasswordSpec {
            username: "gateway".to_owned(),
            password: SecretKeyRef {
                name: "tb".to_owned(),
                key: "password".to_owned(),
            },
            client_id: Some("line-1".to_owned()),
        });
        basic.thingsboard.tls = Some(crate::crd::TlsSpec {
            enabled: Some(true),
            ca: None,
        });
        let plan = validate(&basic, "ns", "n").unwrap();
        assert_eq!(
            plan.identities[0].client_id, "line-1",
            "ThingsBoard's client id"
        );
        assert_eq!(plan.tls, Some(TlsPlan { ca: None }), "the system's CAs");
        assert_eq!(plan.thingsboard_port, DEFAULT_TB_TLS_PORT);
    }

    #[test]
    fn hash_follows_the_config() {
        let spec = fixtures::tcp_spec();
        let mut changed = spec.clone();
        changed.connector.0["devices"][0]["deviceName"] = "Other".into();
        let (a, b) = (
            validate(&spec, "n", "n").unwrap(),
            validate(&changed, "n", "n").unwrap(),
        );
        assert_ne!(a.config_hash, b.config_hash);
        assert_eq!(
            a.config_hash,
            validate(&spec, "n", "n").unwrap().config_hash
        );
    }

    #[test]
    fn the_memory_limit_fits_the_queue() {
        let spec = fixtures::tcp_spec();
        assert_eq!(validate(&spec, "ns", "n").unwrap().memory_limit, "128Mi");
        let mut big = spec.clone();
        big.queue = Some(QueueSpec {
            max_bytes: Some(256 << 20),
            ..QueueSpec::default()
        });
        assert_eq!(
            validate(&big, "ns", "n").unwrap().memory_limit,
            "304Mi",
            "a 256 MiB memory queue and 48 MiB for the rest"
        );
        let mut small = spec.clone();
        small.resources =
            serde_json::from_value(serde_json::json!({"limits": {"memory": "64Mi"}})).unwrap();
        let error = validate(&small, "ns", "n").unwrap_err();
        assert_eq!(error.failure(), Failure::QueueExceedsMemory);
        assert_eq!(
            error.to_string(),
            "spec.resources.limits.memory is 64 MiB, but the connector with this queue needs at least 112 MiB (a memory queue of 64 MiB); raise the limit, lower spec.queue.maxBytes or use spec.queue.persistence"
        );
        small.queue = Some(QueueSpec {
            persistence: Some(crate::crd::PersistenceSpec::default()),
            ..QueueSpec::default()
        });
        assert_eq!(validate(&small, "ns", "n").unwrap().memory_limit, "64Mi");
    }

    #[test]
    fn a_disk_queue_needs_room_on_its_claim() {
        let mut spec = fixtures::tcp_spec();
        spec.queue = Some(QueueSpec {
            max_bytes: Some(1536 << 20),
            persistence: Some(crate::crd::PersistenceSpec {
                size: Some("2Gi".to_owned()),
                storage_class_name: None,
            }),
            ..QueueSpec::default()
        });
        let error = validate(&spec, "ns", "n").unwrap_err();
        assert_eq!(error.failure(), Failure::InvalidQueue);
        assert!(
            error.to_string().contains("persistence.size is 2Gi"),
            "{error}"
        );
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("128Mi"), Some(128 << 20));
        assert_eq!(parse_quantity("1.5Gi"), Some(1536 << 20));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("134217728"), Some(134_217_728));
        assert_eq!(parse_quantity("1e9"), Some(1_000_000_000));
        assert_eq!(parse_quantity("12Xi"), None);
        assert_eq!(parse_quantity("128m"), None);
        assert_eq!(parse_cpu("500m"), Some(0.5));
        assert_eq!(parse_cpu("2k"), Some(2000.0));
        assert_eq!(parse_quantity("-1Mi"), None);
    }
}
