//! The reconcile loop: read → validate → build → apply → delete orphans → status, with the IO at
//! the edges. Unchanged children and statuses are not written again, so a restarted operator (or
//! a periodic resync) makes no API writes in steady state.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::{DeserializeGuard, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::build::{self, Defaults, FIELD_MANAGER};
use crate::crd::{SocketConnector, SocketConnectorStatus};
use crate::failure::Failure;
use crate::metrics::OperatorMetrics;
use crate::secrets::{self, RunningPod, SecretSeen, SecretsSeen};
use crate::status::{self, Observation, PodLink, WaitingPod};
use crate::validate::{validate, Plan};

/// Reconciliations running at once; the rest wait in the controller's queue.
const RECONCILE_CONCURRENCY: u16 = 16;

/// How often running connector pods are asked whether they reach ThingsBoard, by default.
pub const POD_STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// How long one pod's `/status` may take to answer.
const POD_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Annotation holding the hash of what the operator last applied to a child.
pub const APPLIED_HASH_ANNOTATION: &str = "tbsc.io/applied-hash";

/// Why a reconcile errored (retried with backoff; [`ReconcileError::failure`] names it).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("object could not be read: {0}")]
    InvalidObject(String),
    #[error("object has no namespace")]
    NoNamespace,
}

impl ReconcileError {
    pub fn failure(&self) -> Failure {
        match self {
            Self::Api(_) => Failure::ApiError,
            Self::InvalidObject(_) => Failure::InvalidObject,
            Self::NoNamespace => Failure::NoNamespace,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub defaults: Defaults,
    pub recorder: Recorder,
    pub metrics: Arc<OperatorMetrics>,
    /// How often running pods are asked for `/status` ([`POD_STATUS_INTERVAL`]).
    pub pod_status_interval: Duration,
    /// With `--watch-secrets`: what the Secret watches have seen ([`secrets`]).
    pub secrets: Option<SecretIndex>,
    failures: Mutex<HashMap<ObjectRef<DeserializeGuard<SocketConnector>>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        defaults: Defaults,
        metrics: Arc<OperatorMetrics>,
        instance: String,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults,
            metrics,
            pod_status_interval: POD_STATUS_INTERVAL,
            secrets: None,
            failures: Mutex::default(),
        }
    }

    /// Watch the metadata of the Secrets connector pods mount ([`secrets`]).
    pub fn with_secret_watch(mut self) -> Self {
        self.secrets = Some(SecretIndex::default());
        self
    }

    pub fn with_pod_status_interval(mut self, interval: Duration) -> Self {
        self.pod_status_interval = interval;
        self
    }
}

/// The Secret metadata each controller's watch has seen (one per watched namespace, or one for
/// all).
#[derive(Default)]
pub struct SecretIndex {
    stores: Mutex<Vec<Store<PartialObjectMeta<Secret>>>>,
}

impl SecretIndex {
    /// The Secrets among `names` that exist in `namespace`; None until every watch has listed
    /// (before that a Secret not seen may yet exist). Not waited for: the first list triggers a
    /// reconcile of each connector that mounts a listed Secret.
    fn seen(&self, namespace: &str, names: &BTreeSet<String>) -> Option<SecretsSeen> {
        let stores = lock(&self.stores).clone();
        for store in &stores {
            store.wait_until_ready().now_or_never()?.ok()?;
        }
        let seen = names.iter().filter_map(|name| {
            let key = ObjectRef::new(name).within(namespace);
            let secret = stores.iter().find_map(|store| store.get(&key))?;
            Some((name.clone(), SecretSeen::from_meta(&secret.metadata)))
        });
        Some(seen.collect())
    }
}

/// The SocketConnectors whose pods mount `secret`.
fn connectors_mounting(
    connectors: &Store<DeserializeGuard<SocketConnector>>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DeserializeGuard<SocketConnector>>> {
    let name = secret.name_any();
    connectors
        .state()
        .iter()
        .filter(|guarded| guarded.namespace() == secret.namespace())
        .filter(|guarded| {
            guarded
                .0
                .as_ref()
                .is_ok_and(|sc| secrets::names(&sc.spec).contains(&name))
        })
        .map(|guarded| ObjectRef::from_obj(guarded.as_ref()))
        .collect()
}

/// Runs one controller per namespace in `namespaces` (one over all namespaces when empty).
pub async fn run_all(context: Arc<Context>, namespaces: Vec<String>) {
    let namespaces: Vec<String> = namespaces
        .into_iter()
        .filter(|n| !n.trim().is_empty())
        .collect();
    if namespaces.is_empty() {
        return run(context, None).await;
    }
    futures::future::join_all(
        namespaces
            .into_iter()
            .map(|ns| run(context.clone(), Some(ns))),
    )
    .await;
}

/// Runs the controller over `namespace` (all namespaces when None) until the stream ends.
pub async fn run(context: Arc<Context>, namespace: Option<String>) {
    let client = context.client.clone();
    let (connectors, deployments, config_maps, services, network_policies, secrets) =
        match &namespace {
            Some(ns) => (
                Api::<DeserializeGuard<SocketConnector>>::namespaced(client.clone(), ns),
                Api::<Deployment>::namespaced(client.clone(), ns),
                Api::<ConfigMap>::namespaced(client.clone(), ns),
                Api::<Service>::namespaced(client.clone(), ns),
                Api::<NetworkPolicy>::namespaced(client.clone(), ns),
                Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let owned =
        watcher::Config::default().labels(&format!("{}={FIELD_MANAGER}", build::MANAGED_BY_LABEL));
    let mut controller = Controller::new(connectors, watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        .owns(deployments, owned.clone())
        .owns(config_maps, owned.clone())
        .owns(services, owned.clone())
        .owns(network_policies, owned);
    if let Some(index) = &context.secrets {
        let (store, writer) = reflector::store();
        lock(&index.stores).push(store);
        // Metadata only: the Secrets' data never reaches the operator.
        let changes = watcher(secrets, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let connectors = controller.store();
        controller = controller.watches_stream(changes, move |secret| {
            connectors_mounting(&connectors, &secret)
        });
    }
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "reconcile");
            }
        })
        .await;
}

pub async fn reconcile(
    guarded: Arc<DeserializeGuard<SocketConnector>>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_inner(&guarded, &context).await;
    let metrics = &context.metrics;
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    metrics.reconciliations.with_label_values(&[outcome]).inc();
    if result.is_ok() {
        lock(&context.failures).remove(&ObjectRef::from_obj(guarded.as_ref()));
    }
    result
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a failed rollout under its reason (the same name as its condition and Event).
fn count_failure(context: &Context, observation: &Observation) {
    if let Some(failure) = observation.failure() {
        context
            .metrics
            .reconcile_errors
            .with_label_values(&[failure.reason()])
            .inc();
    }
}

/// Exponential backoff per object: 1 s, 2 s, 4 s … 5 min.
pub fn error_policy(
    guarded: Arc<DeserializeGuard<SocketConnector>>,
    error: &ReconcileError,
    context: Arc<Context>,
) -> Action {
    context
        .metrics
        .reconcile_errors
        .with_label_values(&[error.failure().reason()])
        .inc();
    let mut failures = lock(&context.failures);
    let count = failures
        .entry(ObjectRef::from_obj(guarded.as_ref()))
        .or_insert(0);
    *count = count.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*count - 1).min(8)).min(Duration::from_secs(300));
    warn!(%error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(
    guarded: &DeserializeGuard<SocketConnector>,
    context: &Context,
) -> Result<Action, ReconcileError> {
    let sc = match &guarded.0 {
        Ok(sc) => sc,
        Err(invalid) => return report_invalid_object(invalid, context).await,
    };
    if sc.meta().deletion_timestamp.is_some() {
        // Children go with their owner references.
        return Ok(Action::await_change());
    }
    let namespace = sc.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = sc.name_any();

    // validate (pure)
    let plan = match validate(&sc.spec, &namespace, &name) {
        Ok(plan) => plan,
        Err(error) => {
            let observation = Observation::Invalid {
                failure: error.failure(),
                message: error.to_string(),
            };
            write_status(sc, context, &observation, None, None, None).await?;
            return Ok(Action::await_change());
        }
    };
    // build (pure) and apply
    let children = build::children(sc, &plan, &context.defaults);
    for child in children.iter().map(build::Child::to_apply) {
        match apply_if_changed(context, &namespace, &child).await {
            Ok(()) => {}
            // Refused for good until something changes (4xx other than conflicts and throttling):
            // say so on the object; transient errors go to the backoff.
            Err(ReconcileError::Api(kube::Error::Api(status)))
                if (400..500).contains(&status.code) && ![409, 429].contains(&status.code) =>
            {
                let message = format!(
                    "{} {}: {}",
                    child["kind"].as_str().unwrap_or_default(),
                    child["metadata"]["name"].as_str().unwrap_or_default(),
                    status.message
                );
                warn!(%namespace, %name, %message, "child refused by the API server");
                let observation = Observation::ApplyFailed { message };
                write_status(sc, context, &observation, Some(&plan), None, None).await?;
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            Err(error) => return Err(error),
        }
    }
    delete_orphans(sc, &plan, context).await?;
    // status
    let (ready, updated) = deployment_readiness(sc, &plan, context).await?;
    let pods = if plan.paused {
        PodsSeen::default()
    } else {
        observe_pods(sc, &plan, context).await?
    };
    let desired = plan.identities.len() as i32;
    let observation = match pods.mount_failure {
        Some((failure, message)) if ready < desired || !updated => {
            Observation::MountFailed { failure, message }
        }
        _ => Observation::Applied {
            desired,
            ready,
            updated,
            paused: plan.paused,
        },
    };
    let links = (!plan.paused).then_some(&pods.links[..]);
    let now_ready =
        write_status(sc, context, &observation, Some(&plan), Some(ready), links).await?;
    // Running pods are asked again each interval: a lost ThingsBoard shows within it.
    Ok(if plan.paused {
        Action::requeue(Duration::from_secs(300))
    } else if matches!(observation, Observation::MountFailed { .. }) {
        Action::requeue(status::mount_poll_interval(
            sc.status.as_ref(),
            Timestamp::now(),
        ))
    } else if now_ready {
        Action::requeue(context.pod_status_interval)
    } else {
        Action::requeue(context.pod_status_interval.min(Duration::from_secs(30)))
    })
}

/// What the connector's pods say this round.
#[derive(Default)]
struct PodsSeen {
    /// Each running pod's answer on `/status`.
    links: Vec<PodLink>,
    /// Why the kubelet cannot start a waiting pod, if it says so.
    mount_failure: Option<(crate::failure::Failure, String)>,
}

/// Asks each running pod of the connector for `/status` on its metrics port, as Prometheus
/// scrapes it (the pods have no API access of their own to report with); for pods that wait to
/// start, reads the kubelet's `FailedMount` Events (only then: steady state lists no Events).
async fn observe_pods(
    sc: &SocketConnector,
    plan: &Plan,
    context: &Context,
) -> Result<PodsSeen, ReconcileError> {
    let namespace = sc.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&build::label_selector(sc)))
        .await?;
    let port = u16::try_from(plan.metrics_port).unwrap_or_default();
    let mut running: Vec<(String, std::net::IpAddr)> = Vec::new();
    let mut running_pods: Vec<RunningPod> = Vec::new();
    let mut waiting: Vec<WaitingPod> = Vec::new();
    for pod in listed
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
    {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        match status.phase.as_deref() {
            Some("Running") => {
                if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) {
                    running.push((pod.name_any(), ip));
                }
                running_pods.push(RunningPod {
                    name: pod.name_any(),
                    created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    versions: pod.annotations().get(secrets::VERSIONS_ANNOTATION).cloned(),
                });
            }
            Some("Pending") => waiting.push(WaitingPod {
                name: pod.name_any(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            }),
            _ => {}
        }
    }
    running.sort();
    let events = if waiting.is_empty() {
        Vec::new()
    } else {
        let events: Api<CoreEvent> = Api::namespaced(context.client.clone(), &namespace);
        let failed_mounts = ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,reason={}",
            status::FAILED_MOUNT
        ));
        events.list(&failed_mounts).await?.items
    };
    if let Some(index) = &context.secrets {
        let restarted =
            act_on_secrets(sc, context, index, &pods, &running_pods, &waiting, &events).await;
        waiting.retain(|pod| !restarted.contains(&pod.uid));
    }
    let mount_failure = status::mount_failure(&waiting, &events);
    let namespace = &namespace;
    let asked = running.into_iter().map(|(pod, ip)| async move {
        let address = std::net::SocketAddr::new(ip, port);
        let answer = probes::fetch_status(address, POD_STATUS_TIMEOUT).await;
        if let Err(error) = &answer {
            debug!(%namespace, %pod, %error, "pod status not read");
        }
        PodLink { pod, answer }
    });
    Ok(PodsSeen {
        links: futures::future::join_all(asked).await,
        mount_failure,
    })
}

/// With the Secret watch: tells the kubelet of rotated Secrets by annotating running pods, and
/// deletes pods that wait for a Secret written since ([`secrets`]). Returns the uids of the pods
/// deleted. A refused write is logged and retried next round; it fails no reconcile.
async fn act_on_secrets(
    sc: &SocketConnector,
    context: &Context,
    index: &SecretIndex,
    pods: &Api<Pod>,
    running: &[RunningPod],
    waiting: &[WaitingPod],
    events: &[CoreEvent],
) -> BTreeSet<String> {
    let mut restarted = BTreeSet::new();
    let namespace = sc.namespace().unwrap_or_default();
    let names = secrets::names(&sc.spec);
    if names.is_empty() {
        return restarted;
    }
    let Some(seen) = index.seen(&namespace, &names) else {
        warn!(%namespace, "the Secret watch has not listed (yet; it needs list and watch on Secrets): Secrets not acted on this round");
        return restarted;
    };
    let versions = secrets::versions(&seen);
    let mut notes = Vec::new();
    for pod in secrets::pods_to_refresh(running, &seen) {
        let patch = json!({"metadata": {"annotations": {secrets::VERSIONS_ANNOTATION: versions}}});
        match pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                info!(%namespace, %pod, %versions, "kubelet told of rotated Secrets");
                notes.push((
                    "SecretsRotated",
                    format!("pod {pod}: its volumes are refreshed with Secrets {versions}"),
                ));
            }
            Err(error) => {
                warn!(%namespace, %pod, %error, "pod not annotated for its rotated Secrets")
            }
        }
    }
    for pod in secrets::pods_to_restart(waiting, events, &names, &seen) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod.name, &params).await {
            Ok(_) => {
                info!(%namespace, pod = %pod.name, "deleted a pod waiting for a Secret that now exists");
                restarted.insert(pod.uid.clone());
                notes.push((
                    "PodRestarted",
                    format!(
                        "pod {} waited for a Secret written since; a new pod mounts it now",
                        pod.name
                    ),
                ));
            }
            Err(error) => warn!(%namespace, pod = %pod.name, %error, "waiting pod not deleted"),
        }
    }
    for (reason, note) in notes {
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note),
            action: "WatchSecrets".to_owned(),
            secondary: None,
        };
        if let Err(error) = context.recorder.publish(&event, &sc.object_ref(&())).await {
            warn!(%error, "event not published");
        }
    }
    restarted
}

/// A resource that does not deserialize: say so on the object, not in a crash loop.
async fn report_invalid_object(
    invalid: &kube::core::error_boundary::InvalidObject,
    context: &Context,
) -> Result<Action, ReconcileError> {
    let (Some(namespace), Some(name)) = (&invalid.metadata.namespace, &invalid.metadata.name)
    else {
        return Err(ReconcileError::InvalidObject(invalid.error.clone()));
    };
    warn!(%namespace, %name, error = %invalid.error, "SocketConnector cannot be read");
    let api: Api<DynamicObject> = Api::namespaced_with(
        context.client.clone(),
        namespace,
        &kube::core::ApiResource::from_gvk(&GroupVersionKind::gvk(
            crate::crd::GROUP,
            crate::crd::VERSION,
            "SocketConnector",
        )),
    );
    let observation = Observation::Invalid {
        failure: Failure::InvalidObject,
        message: invalid.error.clone(),
    };
    count_failure(context, &observation);
    let conditions = status::conditions(&observation, invalid.metadata.generation);
    let body = json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": "SocketConnector",
        "status": {"observedGeneration": invalid.metadata.generation, "conditions": conditions}
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(Action::await_change())
}

fn api_for(client: &Client, namespace: &str, child: &Value) -> Api<DynamicObject> {
    let api_version = child["apiVersion"].as_str().unwrap_or_default();
    let kind = child["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = kube::core::ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Server-side applies `child` unless the live object already carries the same applied hash.
async fn apply_if_changed(
    context: &Context,
    namespace: &str,
    child: &Value,
) -> Result<(), ReconcileError> {
    let mut child = child.clone();
    let hash = {
        let digest = Sha256::digest(child.to_string().as_bytes());
        digest
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    child["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = Value::from(hash.clone());
    let name = child["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api = api_for(&context.client, namespace, &child);
    let kind = child["kind"].as_str().unwrap_or_default().to_owned();
    if let Some(live) = api.get_opt(&name).await? {
        if live.annotations().get(APPLIED_HASH_ANNOTATION) == Some(&hash) {
            // The same desired object was applied; it still holds unless someone changed the
            // live one (kubectl edit, scale): then apply again (drift correction).
            let live = serde_json::to_value(&live).unwrap_or_default();
            match crate::drift::first_difference(&child, &live) {
                None => return Ok(()),
                Some(path) => {
                    warn!(%namespace, %name, %kind, %path, "child changed by someone else; applying it again");
                    // A server-side apply keeps list entries another manager added (a Service
                    // port edited by hand is a new entry): a merge patch replaces the lists with
                    // the desired ones first.
                    let mut reset = serde_json::Map::new();
                    for section in ["spec", "data"] {
                        if let Some(value) = child.get(section) {
                            reset.insert(section.to_owned(), value.clone());
                        }
                    }
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&Value::Object(reset)),
                    )
                    .await?;
                    context
                        .metrics
                        .drift_corrections
                        .with_label_values(&[kind.as_str()])
                        .inc();
                }
            }
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&child),
    )
    .await?;
    context
        .metrics
        .applies
        .with_label_values(&[kind.as_str()])
        .inc();
    info!(%namespace, %name, %kind, "applied");
    Ok(())
}

/// Deployments of identities that no longer exist (replicas lowered).
async fn delete_orphans(
    sc: &SocketConnector,
    plan: &Plan,
    context: &Context,
) -> Result<(), ReconcileError> {
    let namespace = sc.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let wanted: BTreeSet<String> = plan
        .identities
        .iter()
        .map(|identity| build::deployment_name(sc, identity))
        .collect();
    let listed = deployments
        .list(&ListParams::default().labels(&build::label_selector(sc)))
        .await?;
    for deployment in listed {
        let name = deployment.name_any();
        if !wanted.contains(&name) {
            deployments.delete(&name, &DeleteParams::default()).await?;
            info!(%namespace, %name, "deleted orphaned Deployment");
        }
    }
    // A NetworkPolicy the spec no longer asks for.
    if sc.spec.network_policy.is_none() {
        let policies: Api<NetworkPolicy> = Api::namespaced(context.client.clone(), &namespace);
        let listed = policies
            .list(&ListParams::default().labels(&build::label_selector(sc)))
            .await?;
        for policy in listed {
            let name = policy.name_any();
            policies.delete(&name, &DeleteParams::default()).await?;
            info!(%namespace, %name, "deleted NetworkPolicy no longer asked for");
        }
    }
    Ok(())
}

/// Ready pods across the Deployments, and whether every Deployment runs the current template.
async fn deployment_readiness(
    sc: &SocketConnector,
    plan: &Plan,
    context: &Context,
) -> Result<(i32, bool), ReconcileError> {
    let namespace = sc.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let mut ready = 0;
    let mut updated = true;
    for identity in &plan.identities {
        let Some(deployment) = deployments
            .get_opt(&build::deployment_name(sc, identity))
            .await?
        else {
            updated = false;
            continue;
        };
        let generation = deployment.metadata.generation;
        let status = deployment.status.unwrap_or_default();
        ready += status.ready_replicas.unwrap_or(0);
        let observed =
            status.observed_generation.is_some() && status.observed_generation >= generation;
        let rolled = status.updated_replicas.unwrap_or(0) >= 1 || plan.paused;
        updated &= observed && rolled;
    }
    Ok((ready, updated))
}

/// Writes the status when it differs from the live one; publishes an Event on transitions.
/// Returns whether the connector is Ready.
async fn write_status(
    sc: &SocketConnector,
    context: &Context,
    observation: &Observation,
    plan: Option<&Plan>,
    ready_replicas: Option<i32>,
    links: Option<&[PodLink]>,
) -> Result<bool, ReconcileError> {
    count_failure(context, observation);
    let generation = sc.meta().generation;
    let old = sc.status.clone().unwrap_or_default();
    let mut conditions = status::conditions(observation, generation);
    if let Some(plan) = plan {
        status::with_config_warnings(&mut conditions, &plan.warnings);
    }
    status::with_thingsboard_link(&mut conditions, links, &old.conditions, generation);
    status::with_configuration_origin(
        &mut conditions,
        build::remote_configuration(sc),
        links,
        &old.conditions,
        generation,
    );
    status::carry_transition_times(&mut conditions, &old.conditions);
    let new = SocketConnectorStatus {
        observed_generation: generation,
        conditions,
        ready_replicas: ready_replicas.or(old.ready_replicas),
        config_hash: plan
            .map(|p| p.config_hash.clone())
            .or(old.config_hash.clone()),
        endpoint: plan
            .map(|p| build::endpoint(sc, p))
            .or(old.endpoint.clone()),
        devices: plan.map(|p| p.devices as i32).or(old.devices),
    };
    let ready = status::is_ready(Some(&new));
    if new == old {
        return Ok(ready);
    }
    let namespace = sc.namespace().unwrap_or_default();
    let api: Api<SocketConnector> = Api::namespaced(context.client.clone(), &namespace);
    let body = json!({
        "apiVersion": SocketConnector::api_version(&()),
        "kind": SocketConnector::kind(&()),
        "status": new,
    });
    api.patch_status(
        &sc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    context.metrics.status_writes.inc();
    let warnings = plan.map_or(&[][..], |p| &p.warnings[..]);
    publish_transition_event(sc, context, observation, &old, &new, warnings).await;
    Ok(ready)
}

async fn publish_transition_event(
    sc: &SocketConnector,
    context: &Context,
    observation: &Observation,
    old: &SocketConnectorStatus,
    new: &SocketConnectorStatus,
    config_warnings: &[String],
) {
    let ready_reason = |s: &SocketConnectorStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let mut events = Vec::new();
    if ready_reason(old) != ready_reason(new) {
        let (type_, reason, note) = match observation {
            Observation::Invalid { message, .. }
            | Observation::MountFailed { message, .. }
            | Observation::ApplyFailed { message } => (
                EventType::Warning,
                observation
                    .failure()
                    .map(Failure::reason)
                    .unwrap_or_default()
                    .to_owned(),
                message.clone(),
            ),
            Observation::Applied { .. } if status::is_ready(Some(new)) => (
                EventType::Normal,
                "Ready".to_owned(),
                "all connector pods are ready".to_owned(),
            ),
            Observation::Applied { paused: true, .. } => (
                EventType::Normal,
                "Paused".to_owned(),
                "connector paused".to_owned(),
            ),
            Observation::Applied { ready, desired, .. } => (
                EventType::Normal,
                "RollingOut".to_owned(),
                format!("{ready}/{desired} connector pods ready"),
            ),
        };
        events.push(Event {
            type_,
            reason,
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        });
    }
    if new.config_hash != old.config_hash && !config_warnings.is_empty() {
        events.push(Event {
            type_: EventType::Warning,
            reason: "ConfigWarnings".to_owned(),
            note: Some(status::config_warnings_note(config_warnings)),
            action: "Validate".to_owned(),
            secondary: None,
        });
    }
    if old.config_hash.is_some() && new.config_hash != old.config_hash {
        events.push(Event {
            type_: EventType::Normal,
            reason: "ConfigChanged".to_owned(),
            note: Some(format!(
                "configuration {} applied",
                new.config_hash.clone().unwrap_or_default()
            )),
            action: "Apply".to_owned(),
            secondary: None,
        });
    }
    for event in events {
        if let Err(error) = context.recorder.publish(&event, &sc.object_ref(&())).await {
            warn!(%error, "event not published");
        }
    }
}
