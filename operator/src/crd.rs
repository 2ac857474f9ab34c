//! The `SocketConnector` custom resource. `spec.connector` is the connector's own configuration
//! type: the very JSON of a ThingsBoard `socket.json`, one schema for both.

use std::borrow::Cow;
use std::collections::BTreeMap;

use connector_core::config::ConnectorConfig;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const GROUP: &str = "tbsc.io";
pub const VERSION: &str = "v1alpha1";

/// A ThingsBoard socket connector: devices send raw TCP or UDP to it and it publishes their data to
/// ThingsBoard over the MQTT gateway API.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tbsc.io",
    version = "v1alpha1",
    kind = "SocketConnector",
    namespaced,
    status = "SocketConnectorStatus",
    shortname = "sockconn",
    category = "thingsboard",
    doc = "A ThingsBoard socket connector: raw TCP/UDP device data into ThingsBoard's MQTT gateway API.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "ThingsBoard", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"ThingsBoardConnected\")].reason"}"#,
    printcolumn = r#"{"name": "Configured", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"ConfiguredInThingsBoard\")].reason"}"#,
    printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".spec.connector.socket.type"}"#,
    printcolumn = r#"{"name": "Port", "type": "integer", "jsonPath": ".spec.connector.socket.port"}"#,
    printcolumn = r#"{"name": "Devices", "type": "integer", "jsonPath": ".status.devices"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.replicas) || self.replicas <= 1 || (has(self.thingsboard.additionalAccessTokens) && size(self.thingsboard.additionalAccessTokens) >= self.replicas - 1)",
        "message": "replicas > 1 needs one access token per replica (thingsboard.accessToken plus thingsboard.additionalAccessTokens): ThingsBoard drops the older session when two connectors share a token"
    },
    {
        "rule": "(has(self.thingsboard.accessToken) ? 1 : 0) + (has(self.thingsboard.usernamePassword) ? 1 : 0) + (has(self.thingsboard.clientCertificate) ? 1 : 0) == 1",
        "message": "thingsboard needs exactly one of accessToken, usernamePassword and clientCertificate"
    }
]))]
pub struct SocketConnectorSpec {
    /// The connector configuration: the same JSON as a ThingsBoard gateway `socket.json`
    /// (current format). `socket.address` is replaced by `0.0.0.0` (or `::` for an IPv6
    /// address) so that the Service can reach the pod.
    pub connector: ConnectorDocument,
    /// Where ThingsBoard is and the gateway credentials.
    pub thingsboard: ThingsBoardSpec,
    /// Container image of the connector; default: the operator's `--connector-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// Connector pods, each with its own ThingsBoard gateway identity (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub replicas: Option<i32>,
    /// CPU and memory of the connector container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The Service in front of the connector pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Port of the connector's /metrics, /healthz and /readyz (default 9100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: Option<i32>,
    /// Stop the connector (no pods) while keeping its configuration and Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The uplink queue between the connector and ThingsBoard (default: 64 MiB in memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSpec>,
    /// Where and how the connector pods run: scheduling, pod metadata, extra volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
    /// A NetworkPolicy for the connector pods: ingress only to the device port (from the device
    /// networks) and the metrics port; egress only to ThingsBoard's port, DNS and the device
    /// networks. Without this, no policy is rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

/// What the connector pods may reach and be reached from (CIDRs such as `10.20.0.0/16`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Where ThingsBoard's MQTT endpoint is (default: any address, on its port only).
    #[serde(
        default,
        rename = "thingsboardCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub thingsboard_cidrs: Vec<String>,
    /// The device networks: the only sources on the device port (default: any), and the only
    /// destinations besides ThingsBoard and DNS (polling, client mode, the `set` RPC; default:
    /// none).
    #[serde(default, rename = "deviceCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub device_cidrs: Vec<String>,
}

/// Settings of the connector pods a real cluster asks for; each is passed to the pod template as
/// it is (Kubernetes' own types and validation).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Labels of the pods (beside the operator's, which win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the pods, e.g. `k8s.v1.cni.cncf.io/networks` for a Multus device network
    /// (beside the operator's, which win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<k8s_openapi::api::core::v1::TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<k8s_openapi::api::core::v1::LocalObjectReference>,
    /// Extra volumes of the pods, e.g. the Secret with the device-side TLS files
    /// (`socket.tls` in `spec.connector`), mounted with `volumeMounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    /// Where the connector container mounts `volumes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<k8s_openapi::api::core::v1::VolumeMount>,
    /// Run in the node's network namespace (devices reach the node's own address, no Service
    /// needed). A restricted Pod Security namespace refuses such pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
}

/// `spec.connector` as written: the keys ThingsBoard ignores and its users have in their files
/// (`description`, a device's `accessToken`) are kept, neither refused nor pruned, and reported
/// as the connector reports them (a warning with their path). The schema is the connector's
/// own; the operator checks the document with the connector's loader.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct ConnectorDocument(pub Value);

impl JsonSchema for ConnectorDocument {
    fn schema_name() -> Cow<'static, str> {
        ConnectorConfig::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        ConnectorConfig::json_schema(generator)
    }
}

/// What is kept while ThingsBoard is slow or away (docs/reliability.md).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Most bytes queued (default 64 MiB in memory, 1 GiB with persistence); a memory queue
    /// must fit the memory limit, which the operator sets from it when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<i64>,
    /// When the queue is full: `block` (stop reading devices), `drop-oldest` or `drop-newest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["block", "drop-oldest", "drop-newest"]))]
    pub full_policy: Option<String>,
    /// When the disk queue is fsynced: `never`, `always` or an interval such as `1000ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(never|always|[1-9][0-9]*(ms)?)$"))]
    pub fsync: Option<String>,
    /// Keep the queue on a PersistentVolumeClaim per connector pod, replayed after restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceSpec>,
}

/// The claim each connector pod keeps its queue on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Size of each claim (default 2Gi); `maxBytes` may be at most half of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub size: Option<String>,
    /// StorageClass of the claims (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The ThingsBoard MQTT endpoint and the gateway device credentials: exactly one of
/// `accessToken`, `usernamePassword` and `clientCertificate`. Secrets are mounted read-only as
/// files; the connector picks up a rotated Secret without a restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingsBoardSpec {
    /// ThingsBoard MQTT host.
    pub host: String,
    /// ThingsBoard MQTT port (default 1883; 8883 with TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// MQTT QoS of data publishes: 0 or 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub qos: Option<i32>,
    /// Secret key holding the access token of the gateway device (replica 0). Never inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretKeyRef>,
    /// Access tokens of replicas 1, 2, ...: one distinct gateway device per replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_access_tokens: Vec<SecretKeyRef>,
    /// ThingsBoard's MQTT basic credentials (`usernamePassword`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_password: Option<UsernamePasswordSpec>,
    /// X.509 authentication: a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`), as
    /// cert-manager issues it. Turns TLS on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<TlsSecretRef>,
    /// TLS to ThingsBoard. On with a CA, a client certificate or port 8883.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Gateway-wide report strategy, as in `tb_gateway.json` (`{"type": "ON_CHANGE"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_strategy: Option<connector_core::config::ReportStrategyConfig>,
    /// Let ThingsBoard's UI (its Connectors page) change the connector's devices and log
    /// settings, as `thingsboard.remoteConfiguration` in `tb_gateway.json` does. The newest edit
    /// wins: a UI edit made after the last change of `spec.connector` runs (also after pod
    /// restarts) until `spec.connector` changes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_configuration: Option<bool>,
}

/// MQTT basic credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsernamePasswordSpec {
    /// The MQTT username.
    pub username: String,
    /// Secret key holding the password.
    pub password: SecretKeyRef,
    /// The MQTT client id ThingsBoard expects (default: `<namespace>.<name>-<replica>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// A `kubernetes.io/tls` Secret in the connector's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecretRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// TLS towards ThingsBoard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// TLS with the system's CAs when no CA is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The CA that signed ThingsBoard's certificate, from a Secret or a ConfigMap key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaRef>,
}

/// Where a CA certificate is: exactly one of `secret` and `configMap`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.secret) != has(self.configMap)",
    "message": "tls.ca needs exactly one of secret and configMap"
}]))]
pub struct CaRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct KeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A key of a Secret in the connector's namespace.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret (default `accessToken`).
    #[serde(default = "default_token_key")]
    pub key: String,
}

fn default_token_key() -> String {
    "accessToken".to_owned()
}

/// The connector's Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.externalTrafficPolicy) || (has(self.type) && self.type != 'ClusterIP')",
        "message": "externalTrafficPolicy needs type NodePort or LoadBalancer"
    },
    {
        "rule": "(!has(self.loadBalancerSourceRanges) && !has(self.loadBalancerClass)) || (has(self.type) && self.type == 'LoadBalancer')",
        "message": "loadBalancerSourceRanges and loadBalancerClass need type LoadBalancer"
    }
]))]
pub struct ServiceSpec {
    /// ClusterIP (default), NodePort or LoadBalancer.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ClusterIP", "NodePort", "LoadBalancer"]))]
    pub type_: Option<String>,
    /// Annotations of the Service (load-balancer settings and the like).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fixed node port for the device port (NodePort/LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// NodePort/LoadBalancer only. `Local` (the default there) keeps each device's own address as
    /// the peer the connector sees, so the devices' address filters match; `Cluster` replaces it
    /// with a node's, so that only `*:*` filters match (docs/kubernetes.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Cluster", "Local"]))]
    pub external_traffic_policy: Option<String>,
    /// LoadBalancer only: the client address ranges (CIDRs) the load balancer admits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
    /// LoadBalancer only: which load-balancer implementation serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    /// `ClientIP` keeps a device on one pod, and so with one gateway identity, across
    /// reconnects (default with several replicas); `None` spreads connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["None", "ClientIP"]))]
    pub session_affinity: Option<String>,
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketConnectorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded and ConfigValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Connector pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Hash of the rendered configuration; pods carry it as an annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Where devices connect: `<service>.<namespace>.svc:<port>/<TCP|UDP>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Devices configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<i32>,
}

/// CEL rules for the embedded connector configuration, whose type lives in the connector crate.
fn connector_rules() -> Vec<(&'static str, Value)> {
    vec![
        (
            "socket",
            json!([{
                "rule": "!has(self.port) || (self.port >= 1 && self.port <= 65535)",
                "message": "socket.port must be 1-65535: port 0 picks a random port, which a Service cannot route to"
            }]),
        ),
        (
            "device",
            json!([{
                "rule": "has(self.address) || has(self.addressFilter)",
                "message": "every device needs an address filter: \"address\" (or \"addressFilter\"), e.g. \"*:*\""
            }, {
                "rule": "size(self.deviceName) > 0",
                "message": "deviceName must not be empty"
            }]),
        ),
    ]
}

/// The CRD, with the CEL rules for the embedded connector types added.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = SocketConnector::crd();
    let mut value = serde_json::to_value(&crd).expect("CRD serializes");
    let connector = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["spec"]["properties"]["connector"];
    preserve_unknown_fields(connector);
    for (target, rules) in connector_rules() {
        let schema = match target {
            "socket" => &mut connector["properties"]["socket"],
            _ => &mut connector["properties"]["devices"]["items"],
        };
        if let Some(object) = schema.as_object_mut() {
            object.insert("x-kubernetes-validations".to_owned(), rules);
        }
    }
    if let Ok(with_rules) = serde_json::from_value(value) {
        crd = with_rules;
    }
    crd
}

/// Marks every object of the connector's schema to keep the fields it does not list
/// ([`ConnectorDocument`]), so that `kubectl apply` neither refuses nor prunes them.
fn preserve_unknown_fields(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if object.contains_key("properties") {
                object.insert(
                    "x-kubernetes-preserve-unknown-fields".to_owned(),
                    true.into(),
                );
            }
            object.values_mut().for_each(preserve_unknown_fields);
        }
        Value::Array(items) => items.iter_mut().for_each(preserve_unknown_fields),
        _ => {}
    }
}

/// The CRD as YAML, what `socket-connector-operator crd` prints and `crds/` holds.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).expect("CRD serializes to YAML")
}
