//! The children of a `SocketConnector`, built as pure functions of the resource and its plan, one
//! file per kind: a ConfigMap with `socket.json` ([`config_map`]), queue claims ([`queue_claim`]),
//! one Deployment per gateway identity ([`deployment`]) and a Service ([`service`]).

mod config_map;
mod deployment;
mod network_policy;
mod queue_claim;
mod service;

pub use config_map::{config_map, remote_configuration};
pub use deployment::deployments;
pub use network_policy::network_policy;
pub use queue_claim::{queue_claim_name, queue_claims};
pub use service::service;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::SocketConnector;
use crate::validate::{Identity, Plan};

pub const FIELD_MANAGER: &str = "socket-connector-operator";
pub const CONFIG_FILE: &str = "socket.json";
pub const CONFIG_DIR: &str = "/etc/socket-connector";
/// On the pod template: changes of what the connector cannot hot-reload roll the pods.
pub const RESTART_HASH_ANNOTATION: &str = "tbsc.io/restart-hash";
/// Where a persistent queue is mounted.
pub const QUEUE_DIR: &str = "/var/lib/socket-connector/queue";
/// Where the ThingsBoard credentials (token, password, client certificate, CA) are mounted.
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/thingsboard";
pub const REPLICA_LABEL: &str = "tbsc.io/replica";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Operator-wide defaults that the spec may override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub image: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/tbsc/socket-connector:{}",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

pub fn config_map_name(sc: &SocketConnector) -> String {
    format!("{}-config", sc.name_any())
}

pub fn deployment_name(sc: &SocketConnector, identity: &Identity) -> String {
    format!("{}-{}", sc.name_any(), identity.index)
}

/// Labels every child carries; the selector of orphan clean-up.
pub fn labels(sc: &SocketConnector) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "socket-connector".to_owned(),
        ),
        (INSTANCE_LABEL.to_owned(), sc.name_any()),
        (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
    ])
}

/// `app.kubernetes.io/instance=<name>,app.kubernetes.io/managed-by=...`.
pub fn label_selector(sc: &SocketConnector) -> String {
    format!(
        "{INSTANCE_LABEL}={},{MANAGED_BY_LABEL}={FIELD_MANAGER}",
        sc.name_any()
    )
}

pub(crate) fn metadata(
    sc: &SocketConnector,
    name: String,
    extra_labels: &[(&str, String)],
) -> ObjectMeta {
    let mut labels = labels(sc);
    for (key, value) in extra_labels {
        labels.insert((*key).to_owned(), value.clone());
    }
    ObjectMeta {
        name: Some(name),
        namespace: sc.namespace(),
        labels: Some(labels),
        owner_references: sc.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// `<service>.<namespace>.svc:<port>/<protocol>`.
pub fn endpoint(sc: &SocketConnector, plan: &Plan) -> String {
    format!(
        "{}.{}.svc:{}/{}",
        sc.name_any(),
        sc.namespace().unwrap_or_default(),
        plan.port,
        plan.protocol
    )
}

/// One child object, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    ConfigMap(Box<ConfigMap>),
    QueueClaim(Box<PersistentVolumeClaim>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    NetworkPolicy(Box<NetworkPolicy>),
}

impl Child {
    /// The object for server-side apply: its JSON with apiVersion and kind.
    pub fn to_apply(&self) -> serde_json::Value {
        fn typed<K: Resource<DynamicType = ()> + serde::Serialize>(
            object: &K,
        ) -> serde_json::Value {
            let mut value = serde_json::to_value(object).unwrap_or_default();
            value["apiVersion"] = K::api_version(&()).into();
            value["kind"] = K::kind(&()).into();
            value
        }
        match self {
            Self::ConfigMap(object) => typed(object.as_ref()),
            Self::QueueClaim(object) => typed(object.as_ref()),
            Self::Deployment(object) => typed(object.as_ref()),
            Self::Service(object) => typed(object.as_ref()),
            Self::NetworkPolicy(object) => typed(object.as_ref()),
        }
    }
}

/// Every child, in the order they are applied (what the pods mount before the pods).
pub fn children(sc: &SocketConnector, plan: &Plan, defaults: &Defaults) -> Vec<Child> {
    let mut children = vec![Child::ConfigMap(Box::new(config_map(sc, plan)))];
    children.extend(
        queue_claims(sc, plan)
            .into_iter()
            .map(|claim| Child::QueueClaim(Box::new(claim))),
    );
    children.extend(
        deployments(sc, plan, defaults)
            .into_iter()
            .map(|deployment| Child::Deployment(Box::new(deployment))),
    );
    children.push(Child::Service(Box::new(service(sc, plan))));
    children.extend(network_policy(sc, plan).map(|policy| Child::NetworkPolicy(Box::new(policy))));
    children
}

#[cfg(test)]
mod tests;
