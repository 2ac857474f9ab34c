//! The children of a `SocketConnector`, built as pure functions of the resource and its plan:
//! a ConfigMap with `socket.json`, one Deployment per gateway identity, and a Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort,
    ServiceSpec as CoreServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::SocketConnector;
use crate::validate::{Identity, Plan, DEFAULT_TB_PORT};

pub const FIELD_MANAGER: &str = "socket-connector-operator";
pub const CONFIG_FILE: &str = "socket.json";
pub const CONFIG_DIR: &str = "/etc/socket-connector";
/// On the pod template: changes of what the connector cannot hot-reload roll the pods.
pub const RESTART_HASH_ANNOTATION: &str = "tbsc.io/restart-hash";
/// Where a persistent queue is mounted.
pub const QUEUE_DIR: &str = "/var/lib/socket-connector/queue";
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

fn metadata(sc: &SocketConnector, name: String, extra_labels: &[(&str, String)]) -> ObjectMeta {
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

pub fn config_map(sc: &SocketConnector, plan: &Plan) -> ConfigMap {
    ConfigMap {
        metadata: metadata(sc, config_map_name(sc), &[]),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            plan.config_json.clone(),
        )])),
        ..ConfigMap::default()
    }
}

pub fn queue_claim_name(sc: &SocketConnector, identity: &Identity) -> String {
    format!("{}-queue", deployment_name(sc, identity))
}

/// One claim per identity when `spec.queue.persistence` is set: the queue of a gateway identity
/// survives its pod.
pub fn queue_claims(sc: &SocketConnector, plan: &Plan) -> Vec<PersistentVolumeClaim> {
    let Some(persistence) = sc.spec.queue.as_ref().and_then(|q| q.persistence.as_ref()) else {
        return Vec::new();
    };
    plan.identities
        .iter()
        .map(|identity| PersistentVolumeClaim {
            metadata: metadata(
                sc,
                queue_claim_name(sc, identity),
                &[(REPLICA_LABEL, identity.index.to_string())],
            ),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(persistence.size.clone().unwrap_or_else(|| "2Gi".to_owned())),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        })
        .collect()
}

pub fn deployments(sc: &SocketConnector, plan: &Plan, defaults: &Defaults) -> Vec<Deployment> {
    plan.identities
        .iter()
        .map(|identity| deployment(sc, plan, identity, defaults))
        .collect()
}

fn deployment(
    sc: &SocketConnector,
    plan: &Plan,
    identity: &Identity,
    defaults: &Defaults,
) -> Deployment {
    let spec = &sc.spec;
    let replica = [(REPLICA_LABEL, identity.index.to_string())];
    let mut selector = labels(sc);
    selector.remove(MANAGED_BY_LABEL);
    selector.insert(REPLICA_LABEL.to_owned(), identity.index.to_string());
    let mut pod_labels = labels(sc);
    pod_labels.insert(REPLICA_LABEL.to_owned(), identity.index.to_string());
    let tb = &spec.thingsboard;
    let mut args = vec![
        "run".to_owned(),
        "--config".to_owned(),
        format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        "--tb-host".to_owned(),
        tb.host.clone(),
        "--tb-port".to_owned(),
        tb.port.unwrap_or(DEFAULT_TB_PORT).to_string(),
        "--qos".to_owned(),
        tb.qos.unwrap_or(1).to_string(),
        "--client-id".to_owned(),
        identity.client_id.clone(),
        "--metrics-address".to_owned(),
        format!("0.0.0.0:{}", plan.metrics_port),
        "--log-format".to_owned(),
        "json".to_owned(),
        "--shutdown-grace-seconds".to_owned(),
        "20".to_owned(),
    ];
    if let Some(strategy) = &tb.report_strategy {
        args.push("--report-strategy".to_owned());
        args.push(serde_json::to_string(strategy).unwrap_or_default());
    }
    let queue = spec.queue.clone().unwrap_or_default();
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            args.push(format!("--{name}"));
            args.push(value);
        }
    };
    flag("queue-max-bytes", queue.max_bytes.map(|b| b.to_string()));
    flag("queue-full-policy", queue.full_policy.clone());
    flag("queue-fsync", queue.fsync.clone());
    flag(
        "queue-directory",
        queue.persistence.as_ref().map(|_| QUEUE_DIR.to_owned()),
    );
    let mut volume_mounts = vec![VolumeMount {
        name: "config".to_owned(),
        mount_path: CONFIG_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(sc),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if queue.persistence.is_some() {
        volume_mounts.push(VolumeMount {
            name: "queue".to_owned(),
            mount_path: QUEUE_DIR.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "queue".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: queue_claim_name(sc, identity),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
    }
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let container = Container {
        name: "connector".to_owned(),
        image: Some(spec.image.clone().unwrap_or_else(|| defaults.image.clone())),
        image_pull_policy: spec.image_pull_policy.clone(),
        command: Some(vec!["socket-connector".to_owned()]),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "TB_ACCESS_TOKEN".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: identity.token.name.clone(),
                    key: identity.token.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("device".to_owned()),
                container_port: i32::from(plan.port),
                protocol: Some(plan.protocol.to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: plan.metrics_port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };
    let annotations = BTreeMap::from([
        (
            RESTART_HASH_ANNOTATION.to_owned(),
            plan.restart_hash.clone(),
        ),
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        (
            "prometheus.io/port".to_owned(),
            plan.metrics_port.to_string(),
        ),
    ]);
    Deployment {
        metadata: metadata(sc, deployment_name(sc, identity), &replica),
        spec: Some(DeploymentSpec {
            replicas: Some(if plan.paused { 0 } else { 1 }),
            // Never two pods with one gateway token, not even during a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                ..DeploymentStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        // The queue claim must be writable by the non-root user.
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// A starting point for small connectors; set `spec.resources` from measured load.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".to_owned())),
            ("memory".to_owned(), Quantity("32Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("128Mi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

pub fn service(sc: &SocketConnector, plan: &Plan) -> Service {
    let settings = sc.spec.service.clone().unwrap_or_default();
    let mut selector = labels(sc);
    selector.remove(MANAGED_BY_LABEL);
    let mut metadata = metadata(sc, sc.name_any(), &[]);
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    let type_ = settings.type_.unwrap_or_else(|| "ClusterIP".to_owned());
    Service {
        metadata,
        spec: Some(CoreServiceSpec {
            type_: Some(type_.clone()),
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("device".to_owned()),
                    port: i32::from(plan.port),
                    target_port: Some(IntOrString::String("device".to_owned())),
                    protocol: Some(plan.protocol.to_owned()),
                    node_port: settings.node_port.filter(|_| type_ != "ClusterIP"),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".to_owned()),
                    port: plan.metrics_port,
                    target_port: Some(IntOrString::String("metrics".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
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

/// Every child, as JSON objects ready for server-side apply (with apiVersion and kind).
pub fn children(sc: &SocketConnector, plan: &Plan, defaults: &Defaults) -> Vec<serde_json::Value> {
    fn typed<K: Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> serde_json::Value {
        let mut value = serde_json::to_value(object).unwrap_or_default();
        value["apiVersion"] = K::api_version(&()).into();
        value["kind"] = K::kind(&()).into();
        value
    }
    let mut children = vec![typed(&config_map(sc, plan))];
    children.extend(queue_claims(sc, plan).iter().map(typed));
    children.extend(deployments(sc, plan, defaults).iter().map(typed));
    children.push(typed(&service(sc, plan)));
    children
}

#[cfg(test)]
mod tests;
