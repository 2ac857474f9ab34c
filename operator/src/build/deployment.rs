//! One Deployment per gateway identity (never two pods with one token: `Recreate`), running the
//! connector with the ConfigMap mounted, its ThingsBoard credentials as files from their Secrets
//! (so a rotated Secret reaches the running connector) and the queue on its claim.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource, Container,
    ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_map::{remote_configuration, CHANGED_AT_KEY};
use super::queue_claim::queue_claim_name;
use super::{
    config_map_name, deployment_name, labels, metadata, Defaults, CONFIG_DIR, CONFIG_FILE,
    CREDENTIALS_DIR, MANAGED_BY_LABEL, QUEUE_DIR, REPLICA_LABEL, RESTART_HASH_ANNOTATION,
};
use crate::crd::SocketConnector;
use crate::validate::{CaSource, Credential, Identity, Plan, TLS_CERT_KEY, TLS_KEY_KEY};

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
        plan.thingsboard_port.to_string(),
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
    let (credential_args, credentials) = credentials(identity, plan);
    args.extend(credential_args);
    if let Some(strategy) = &tb.report_strategy {
        args.push("--report-strategy".to_owned());
        args.push(serde_json::to_string(strategy).unwrap_or_default());
    }
    let mut env = Vec::new();
    if remote_configuration(sc) {
        args.push("--remote-configuration".to_owned());
        // From the ConfigMap, so that a change of `spec.connector` does not roll the pods: it is
        // read at start, when the ConfigMap's file is new whatever its content's age.
        env.push(EnvVar {
            name: "CONFIG_CHANGED_AT_MS".to_owned(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: config_map_name(sc),
                    key: CHANGED_AT_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    let queue = spec.queue.clone().unwrap_or_default();
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            args.push(format!("--{name}"));
            args.push(value);
        }
    };
    let resources = resources(spec.resources.as_ref(), &plan.memory_limit);
    flag(
        "worker-threads",
        worker_threads(&resources).map(|n| n.to_string()),
    );
    flag("queue-max-bytes", queue.max_bytes.map(|b| b.to_string()));
    flag("queue-full-policy", queue.full_policy.clone());
    flag("queue-fsync", queue.fsync.clone());
    flag(
        "queue-directory",
        queue.persistence.as_ref().map(|_| QUEUE_DIR.to_owned()),
    );
    let pod = spec.pod.clone().unwrap_or_default();
    let mut volume_mounts = vec![
        VolumeMount {
            name: "config".to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "thingsboard".to_owned(),
            mount_path: CREDENTIALS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(sc),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "thingsboard".to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(credentials),
                // Readable by the connector's group (fsGroup) only.
                default_mode: Some(0o440),
            }),
            ..Volume::default()
        },
    ];
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
    volume_mounts.extend(pod.volume_mounts.iter().cloned());
    volumes.extend(pod.volumes.iter().cloned());
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
        env: (!env.is_empty()).then_some(env),
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
        resources: Some(resources),
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
    // The user's pod labels and annotations, under the operator's own.
    let mut annotations = pod.annotations.clone();
    annotations.extend([
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
    let mut template_labels = pod.labels.clone();
    template_labels.extend(pod_labels);
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
                    labels: Some(template_labels),
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
                    node_selector: (!pod.node_selector.is_empty())
                        .then(|| pod.node_selector.clone()),
                    tolerations: non_empty(&pod.tolerations),
                    affinity: pod.affinity.clone(),
                    topology_spread_constraints: non_empty(&pod.topology_spread_constraints),
                    priority_class_name: pod.priority_class_name.clone(),
                    image_pull_secrets: non_empty(&pod.image_pull_secrets),
                    host_network: pod.host_network.filter(|on| *on),
                    // Cluster DNS (ThingsBoard's Service name) also from the node's network.
                    dns_policy: pod
                        .host_network
                        .filter(|on| *on)
                        .map(|_| "ClusterFirstWithHostNet".to_owned()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// A list the API server would drop when empty: none then.
fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// The connector's credential flags and the projection that puts the files they name into
/// [`CREDENTIALS_DIR`]. A projected volume, not `subPath` mounts or environment variables: the
/// kubelet updates it when a Secret rotates, and the connector reconnects with the new files.
fn credentials(identity: &Identity, plan: &Plan) -> (Vec<String>, Vec<VolumeProjection>) {
    let file = |name: &str| format!("{CREDENTIALS_DIR}/{name}");
    let secret = |name: &str, items: Vec<(&str, &str)>| VolumeProjection {
        secret: Some(SecretProjection {
            name: name.to_owned(),
            items: Some(
                items
                    .into_iter()
                    .map(|(key, path)| KeyToPath {
                        key: key.to_owned(),
                        path: path.to_owned(),
                        mode: None,
                    })
                    .collect(),
            ),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    };
    let (mut args, mut sources) = match &identity.credential {
        Credential::AccessToken(token) => (
            vec!["--token-file".to_owned(), file("access-token")],
            vec![secret(&token.name, vec![(&token.key, "access-token")])],
        ),
        Credential::UsernamePassword { username, password } => (
            vec![
                "--tb-username".to_owned(),
                username.clone(),
                "--tb-password-file".to_owned(),
                file("password"),
            ],
            vec![secret(&password.name, vec![(&password.key, "password")])],
        ),
        Credential::ClientCertificate { secret_name } => (
            vec![
                "--tb-client-cert".to_owned(),
                file(TLS_CERT_KEY),
                "--tb-client-key".to_owned(),
                file(TLS_KEY_KEY),
            ],
            vec![secret(
                secret_name,
                vec![(TLS_CERT_KEY, TLS_CERT_KEY), (TLS_KEY_KEY, TLS_KEY_KEY)],
            )],
        ),
    };
    if let Some(tls) = &plan.tls {
        args.push("--tb-tls".to_owned());
        match &tls.ca {
            None => {}
            Some(CaSource::Secret(ca)) => {
                args.extend(["--tb-ca-cert".to_owned(), file("ca.crt")]);
                sources.push(secret(&ca.name, vec![(&ca.key, "ca.crt")]));
            }
            Some(CaSource::ConfigMap(ca)) => {
                args.extend(["--tb-ca-cert".to_owned(), file("ca.crt")]);
                sources.push(VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: ca.name.clone(),
                        items: Some(vec![KeyToPath {
                            key: ca.key.clone(),
                            path: "ca.crt".to_owned(),
                            mode: None,
                        }]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                });
            }
        }
    }
    (args, sources)
}

/// Worker threads for what the pod may use: its CPU limit, else its request, rounded up. Without
/// the flag the connector would start one per core of the node (only a limit lowers that), and
/// one worker is cheapest for slow devices (docs/benchmarks.md#read-coalescing). `None` when the
/// quantity does not parse or is 0.
fn worker_threads(resources: &ResourceRequirements) -> Option<u32> {
    let cpu = |list: &Option<BTreeMap<String, Quantity>>| list.as_ref()?.get("cpu").cloned();
    let Quantity(cpu) = cpu(&resources.limits).or_else(|| cpu(&resources.requests))?;
    let cores = crate::validate::parse_cpu(&cpu)?;
    (cores > 0.0).then(|| (cores.ceil() as u32).clamp(1, 1024))
}

/// The spec's resources, with a memory limit the queue fits in when it gives none; requests are a
/// starting point for small connectors (set `spec.resources` from measured load).
fn resources(spec: Option<&ResourceRequirements>, memory_limit: &str) -> ResourceRequirements {
    let mut resources = spec.cloned().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".to_owned())),
            ("memory".to_owned(), Quantity("32Mi".to_owned())),
        ])),
        ..ResourceRequirements::default()
    });
    resources
        .limits
        .get_or_insert_with(BTreeMap::new)
        .entry("memory".to_owned())
        .or_insert_with(|| Quantity(memory_limit.to_owned()));
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cpu(limit: Option<&str>, request: Option<&str>) -> Option<u32> {
        let list = |cpu: Option<&str>| {
            cpu.map(|cpu| BTreeMap::from([("cpu".to_owned(), Quantity(cpu.to_owned()))]))
        };
        worker_threads(&ResourceRequirements {
            limits: list(limit),
            requests: list(request),
            ..ResourceRequirements::default()
        })
    }

    #[test]
    fn worker_threads_follow_the_cpu_limit_else_the_request() {
        assert_eq!(with_cpu(None, Some("50m")), Some(1));
        assert_eq!(with_cpu(Some("2"), Some("50m")), Some(2));
        assert_eq!(with_cpu(Some("1500m"), None), Some(2));
        assert_eq!(with_cpu(None, Some("0.5")), Some(1));
        assert_eq!(with_cpu(None, Some("2k")), Some(1024));
        assert_eq!(with_cpu(None, Some("2Xi")), None);
        assert_eq!(with_cpu(None, None), None);
        assert_eq!(with_cpu(Some("0"), None), None);
    }
}
