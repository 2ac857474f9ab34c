//! The operator against a real kube-apiserver + etcd (no kubelet: a small test controller marks
//! Deployments available, as Strimzi's MockKube does). One control plane serves every scenario,
//! each in its own namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::control_plane::{fake_kubelet, write_requests, ControlPlane};
use e2e_tests::peer::telemetry_entries;
use e2e_tests::{free_port, Mosquitto, ThingsBoardPeer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use probes::Endpoint;
use serde_json::{json, Value};
use socket_connector_operator::build::{Defaults, RESTART_HASH_ANNOTATION};
use socket_connector_operator::controller::{self, Context};
use socket_connector_operator::crd::SocketConnector;
use socket_connector_operator::leader;
use socket_connector_operator::metrics::OperatorMetrics;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = socket_connector_operator::crd::crd();
    crds.patch(
        "socketconnectors.tbsc.io",
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    tokio::time::timeout(
        WAIT,
        await_condition(
            crds,
            "socketconnectors.tbsc.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established in time")
    .expect("watch CRD");
}

async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let string_data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": string_data}))
            .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

struct Operator {
    task: JoinHandle<()>,
    metrics: Arc<OperatorMetrics>,
}

fn start_operator(client: Client, ns: &str) -> Operator {
    let metrics = Arc::new(OperatorMetrics::new());
    // Pods are asked for their ThingsBoard link every second, not every 30 s.
    let context = Arc::new(
        Context::new(client, Defaults::default(), metrics.clone(), "e2e".into())
            .with_pod_status_interval(Duration::from_secs(1)),
    );
    let task = tokio::spawn(controller::run(context, Some(ns.to_owned())));
    Operator { task, metrics }
}

fn spec(tb_port: u16, device_port: u16, metrics_port: u16) -> Value {
    json!({
        "connector": {
            "name": "Line 1",
            "socket": {"type": "TCP", "address": "127.0.0.1", "port": device_port},
            "devices": [{"address": "*:*", "deviceName": "Press 1",
                         "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1}]}]
        },
        "thingsboard": {"host": "127.0.0.1", "port": tb_port, "accessToken": {"name": "gateway", "key": "token"}},
        "metricsPort": metrics_port
    })
}

async fn create(
    client: &Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<SocketConnector, kube::Error> {
    let api: Api<SocketConnector> = Api::namespaced(client.clone(), ns);
    let object: SocketConnector = serde_json::from_value(json!({
        "apiVersion": "tbsc.io/v1alpha1", "kind": "SocketConnector",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("valid object");
    api.create(&PostParams::default(), &object).await
}

/// Rejection message of creating a SocketConnector with `spec`.
async fn rejection(client: &Client, ns: &str, spec: Value) -> String {
    let resource = kube::core::ApiResource::erase::<SocketConnector>(&());
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let object = json!({"apiVersion": "tbsc.io/v1alpha1", "kind": "SocketConnector", "metadata": {"name": "bad"}, "spec": spec.clone()});
    let object: kube::core::DynamicObject = serde_json::from_value(object).unwrap();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => panic!("the API server accepted {spec}"),
        Err(error) => error.to_string(),
    }
}

/// Merge-patches the spec of `line-1`, the connector the main test walks through its changes.
async fn merge(api: &Api<SocketConnector>, patch: &Value) {
    api.patch("line-1", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// Waits until `check` holds for the SocketConnector.
async fn wait_for(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&SocketConnector) -> bool,
) -> SocketConnector {
    let api: Api<SocketConnector> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(sc) = api.get(name).await {
            if check(&sc) {
                return sc;
            }
            if Instant::now() > deadline {
                panic!("{what}: not reached; status {:#?}", sc.status);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition<'a>(
    sc: &'a SocketConnector,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    sc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn is(sc: &SocketConnector, type_: &str, status: &str) -> bool {
    condition(sc, type_).is_some_and(|c| c.status == status)
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_on_a_real_api_server() {
    let plane = ControlPlane::start();
    let client = plane.client().await;
    install_crd(&client).await;
    let ns = "plant";
    namespace(&client, ns).await;
    let fake_kubelet = fake_kubelet(client.clone(), ns);

    // --- The API server enforces the CRD's CEL rules, with readable messages.
    let mut two_replicas = spec(1883, 50000, 9100);
    two_replicas["replicas"] = json!(2);
    assert!(rejection(&client, ns, two_replicas)
        .await
        .contains("replicas > 1 needs one access token per replica"));
    let mut no_filter = spec(1883, 50000, 9100);
    no_filter["connector"]["devices"][0]
        .as_object_mut()
        .unwrap()
        .remove("address");
    assert!(rejection(&client, ns, no_filter)
        .await
        .contains("every device needs an address filter"));
    let mut port_zero = spec(1883, 50000, 9100);
    port_zero["connector"]["socket"]["port"] = json!(0);
    assert!(rejection(&client, ns, port_zero)
        .await
        .contains("socket.port must be 1-65535"));
    let mut two_identities = spec(1883, 50000, 9100);
    two_identities["thingsboard"]["clientCertificate"] = json!({"secretName": "gateway-cert"});
    assert!(rejection(&client, ns, two_identities)
        .await
        .contains("exactly one of accessToken, usernamePassword and clientCertificate"));
    let mut two_cas = spec(1883, 50000, 9100);
    two_cas["thingsboard"]["tls"] = json!({"ca": {"secret": {"name": "a", "key": "ca.crt"},
        "configMap": {"name": "b", "key": "ca.crt"}}});
    assert!(rejection(&client, ns, two_cas)
        .await
        .contains("tls.ca needs exactly one of secret and configMap"));
    let mut cluster_local = spec(1883, 50000, 9100);
    cluster_local["service"] = json!({"externalTrafficPolicy": "Local"});
    assert!(rejection(&client, ns, cluster_local)
        .await
        .contains("externalTrafficPolicy needs type NodePort or LoadBalancer"));
    let mut sctp = spec(1883, 50000, 9100);
    sctp["connector"]["socket"]["type"] = json!("SCTP");
    assert!(rejection(&client, ns, sctp)
        .await
        .contains("spec.connector.socket.type"));

    // --- ConfigMap, Deployment and Service, owned; Ready once available. (A missing Secret is
    // reported by the kubelet: tests/tests/node.rs.)
    let mut broker = Mosquitto::start();
    let (device_port, metrics_port) = (free_port(), free_port());
    let operator = start_operator(client.clone(), ns);
    secret(&client, ns, "gateway", &[("token", "gateway-token-1")]).await;
    create(
        &client,
        ns,
        "line-1",
        spec(broker.port(), device_port, metrics_port),
    )
    .await
    .expect("create");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let ready = wait_for(&client, ns, "line-1", "Ready", |sc| is(sc, "Ready", "True")).await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(status.devices, Some(1));
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("line-1.plant.svc:{device_port}/TCP").as_str())
    );
    assert!(is(&ready, "ConfigValid", "True") && is(&ready, "Degraded", "False"));
    let deployment = deployments.get("line-1-0").await.unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let config_map = config_maps.get("line-1-config").await.unwrap();
    let service = services.get("line-1").await.unwrap();
    for owners in [
        &deployment.metadata.owner_references,
        &config_map.metadata.owner_references,
        &service.metadata.owner_references,
    ] {
        let owner = &owners.as_ref().expect("owner reference")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("SocketConnector", "line-1", ready.uid().unwrap().as_str())
        );
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("line-1"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"Ready".to_owned()), "{reasons:?}");

    // --- What `kubectl get` shows (the CRD's printer columns); no pod runs yet.
    let kubeconfig = plane.kubeconfig_file(&plane.kubeconfig_yaml(), "admin.kubeconfig");
    let rows = kubectl_get_sockconn(&kubeconfig, ns);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "READY",
            "REASON",
            "THINGSBOARD",
            "CONFIGURED",
            "TYPE",
            "PORT",
            "DEVICES",
            "AGE"
        ],
    );
    assert_eq!(
        rows[1][..7],
        [
            "line-1",
            "True",
            "Available",
            "NoPods",
            "TCP",
            &device_port.to_string(),
            "1"
        ],
    );

    // --- A socket.json with keys ThingsBoard ignores, applied as `kubectl apply --server-side`
    // does (strict field validation): kept, valid, and named in a warning.
    extra_keys_are_kept_and_reported(&client, ns, broker.port()).await;
    pod_and_service_settings_reach_the_children(&client, ns, broker.port()).await;

    // --- The rendered pod runs: the Deployment's command, args and env with the ConfigMap.
    let rendered = RenderedPod {
        deployment: &deployment,
        config_map: &config_map,
        device_port,
        metrics_port,
    };
    run_rendered_pod(&client, ns, &rendered, &mut broker, &kubeconfig).await;

    // --- A device change only updates the ConfigMap: the running connector hot-reloads it, so
    // the pods keep running (same restart hash on the pod template).
    let hash_before = pod_hash(&deployment);
    let status_hash = |sc: &SocketConnector| sc.status.as_ref().and_then(|s| s.config_hash.clone());
    let api: Api<SocketConnector> = Api::namespaced(client.clone(), ns);
    let config_before = status_hash(&api.get("line-1").await.unwrap());
    let change = json!({"spec": {"connector": {"devices": [{"address": "*:*", "deviceName": "Press 2",
        "telemetry": [{"key": "temp"}]}]}}});
    merge(&api, &change).await;
    let applied = wait_for(&client, ns, "line-1", "new config applied", |sc| {
        status_hash(sc) != config_before && is(sc, "Ready", "True")
    })
    .await;
    assert!(socket_json(&config_maps).await.contains("Press 2"));
    let deployment = deployments.get("line-1-0").await.unwrap();
    assert_eq!(
        pod_hash(&deployment),
        hash_before,
        "a device change must not restart the pods"
    );

    // --- Remote configuration opt-in: the connector's flag, and when spec.connector last changed
    // (from the real API server's managedFields, 1 s resolution) in the ConfigMap, read by the
    // pod at start.
    let before_ms = now_ms() - 1000;
    merge(
        &api,
        &json!({"spec": {"thingsboard": {"remoteConfiguration": true}}}),
    )
    .await;
    let deadline = Instant::now() + WAIT;
    let changed_at: i64 = loop {
        let config_map = config_maps.get("line-1-config").await.unwrap();
        if let Some(value) = config_map
            .data
            .unwrap_or_default()
            .get("connector-changed-at-ms")
        {
            break value.parse().expect("milliseconds");
        }
        assert!(Instant::now() < deadline, "no connector-changed-at-ms");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (before_ms..=now_ms() + 1000).contains(&changed_at),
        "{changed_at} not the time of the last change (after {before_ms})"
    );
    let remote_pod = deployments.get("line-1-0").await.unwrap();
    let container = &remote_pod.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(container
        .args
        .iter()
        .flatten()
        .any(|arg| arg == "--remote-configuration"));
    let env = &container.env.as_ref().expect("env")[0];
    assert_eq!(env.name, "CONFIG_CHANGED_AT_MS");
    let key = env
        .value_from
        .as_ref()
        .unwrap()
        .config_map_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("line-1-config", "connector-changed-at-ms")
    );
    merge(
        &api,
        &json!({"spec": {"thingsboard": {"remoteConfiguration": null}}}),
    )
    .await;

    // --- A socket change cannot be hot-reloaded: it rolls the pods.
    let socket_change = json!({"spec": {"connector": {"socket": {"bufferSize": 2048}}}});
    merge(&api, &socket_change).await;
    wait_for(&client, ns, "line-1", "socket change rolled out", |sc| {
        status_hash(sc) != status_hash(&applied) && is(sc, "Ready", "True")
    })
    .await;
    let deployment = deployments.get("line-1-0").await.unwrap();
    assert_ne!(
        pod_hash(&deployment),
        hash_before,
        "a socket change restarts the pods"
    );

    // --- A configuration the connector's loader rejects: ConfigValid=False with the JSON path.
    let bad = json!({"spec": {"connector": {"devices": [{"address": "*:*", "deviceName": "Press 2",
        "telemetry": [{"key": "temp", "reportStrategy": {"type": "ON_REPORT_PERIOD"}}]}]}}});
    merge(&api, &bad).await;
    let invalid = wait_for(&client, ns, "line-1", "ConfigValid=False", |sc| {
        is(sc, "ConfigValid", "False")
    })
    .await;
    let message = &condition(&invalid, "ConfigValid").unwrap().message;
    assert_eq!(message, "spec.connector.devices[0].telemetry[0].reportStrategy.reportPeriod: missing: ON_REPORT_PERIOD needs a period in milliseconds");
    assert!(socket_json(&config_maps).await.contains("Press 2"));
    assert!(
        !socket_json(&config_maps).await.contains("ON_REPORT_PERIOD"),
        "an invalid config must not be rolled out"
    );
    let fixed = json!({"spec": {"connector": {"devices": [{"address": "*:*", "deviceName": "Press 2",
        "telemetry": [{"key": "temp"}]}]}}});
    merge(&api, &fixed).await;
    wait_for(&client, ns, "line-1", "valid again", |sc| {
        is(sc, "Ready", "True") && is(sc, "ConfigValid", "True")
    })
    .await;

    // --- A child the API server refuses (a claim's storage class cannot change) degrades the
    // connector with the server's message instead of failing silently; undoing it heals it.
    let queue = |class: &str| json!({"spec": {"queue": {"maxBytes": 536870912, "persistence": {"size": "1Gi", "storageClassName": class}}}});
    merge(&api, &queue("fast")).await;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    while claims.get_opt("line-1-0-queue").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "queue claim not created");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    merge(&api, &queue("slow")).await;
    let refused = wait_for(&client, ns, "line-1", "ApplyFailed", |sc| {
        condition(sc, "Degraded").is_some_and(|c| c.reason == "ApplyFailed")
    })
    .await;
    let message = &condition(&refused, "Degraded").unwrap().message;
    assert!(
        message.starts_with("PersistentVolumeClaim line-1-0-queue: "),
        "{message}"
    );
    assert!(message.contains("immutable"), "{message}");
    assert!(is(&refused, "ConfigValid", "True"));
    merge(&api, &queue("fast")).await;
    wait_for(&client, ns, "line-1", "healed", |sc| {
        is(sc, "Ready", "True") && is(sc, "Degraded", "False")
    })
    .await;
    merge(&api, &json!({"spec": {"queue": null}})).await;

    // --- Two identities, then one: the orphaned Deployment goes.
    secret(&client, ns, "gateway-b", &[("token", "gateway-token-2")]).await;
    let two = json!({"spec": {"replicas": 2, "thingsboard": {"additionalAccessTokens": [{"name": "gateway-b", "key": "token"}]}}});
    merge(&api, &two).await;
    wait_for(&client, ns, "line-1", "two replicas ready", |sc| {
        sc.status.as_ref().and_then(|s| s.ready_replicas) == Some(2) && is(sc, "Ready", "True")
    })
    .await;
    assert!(deployments.get_opt("line-1-1").await.unwrap().is_some());
    merge(&api, &json!({"spec": {"replicas": 1}})).await;
    let deadline = Instant::now() + WAIT;
    while deployments.get_opt("line-1-1").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "orphaned Deployment line-1-1 not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // --- An operator restart writes nothing when nothing changed.
    wait_for(&client, ns, "line-1", "settled", |sc| {
        is(sc, "Ready", "True") && sc.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    operator.task.abort();
    let resources = [
        "configmaps",
        "deployments",
        "services",
        "socketconnectors",
        "events",
    ];
    let before: Vec<f64> = {
        let m = plane.metrics(&client).await;
        resources.iter().map(|r| write_requests(&m, r)).collect()
    };
    let restarted = start_operator(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    while restarted
        .metrics
        .reconciliations
        .with_label_values(&["success"])
        .get()
        < 1
    {
        assert!(
            Instant::now() < deadline,
            "restarted operator did not reconcile"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<f64> = {
        let m = plane.metrics(&client).await;
        resources.iter().map(|r| write_requests(&m, r)).collect()
    };
    assert_eq!(
        after, before,
        "writes by resource {resources:?} after an operator restart"
    );
    assert_eq!(
        restarted
            .metrics
            .applies
            .with_label_values(&["Deployment"])
            .get(),
        0
    );

    // --- Drift: a child changed by hand is put back (the operator watches what it owns and
    // compares the live object with what it applied), one correction each.
    let mut service = services.get("line-1").await.unwrap();
    service.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 1234;
    services
        .replace("line-1", &PostParams::default(), &service)
        .await
        .unwrap();
    let mut config_map = config_maps.get("line-1-config").await.unwrap();
    let rendered = config_map.data.as_ref().unwrap()["socket.json"].clone();
    config_map
        .data
        .as_mut()
        .unwrap()
        .insert("socket.json".to_owned(), "{}".to_owned());
    config_maps
        .replace("line-1-config", &PostParams::default(), &config_map)
        .await
        .unwrap();
    let mut scaled = deployments.get("line-1-0").await.unwrap();
    scaled.spec.as_mut().unwrap().replicas = Some(3);
    deployments
        .replace("line-1-0", &PostParams::default(), &scaled)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let port = services
            .get("line-1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap()[0]
            .port;
        let data = config_maps
            .get("line-1-config")
            .await
            .unwrap()
            .data
            .unwrap_or_default();
        let replicas = deployments
            .get("line-1-0")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas;
        if port == device_port as i32 && data["socket.json"] == rendered && replicas == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drift not corrected: port {port}, replicas {replicas:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for kind in ["Service", "ConfigMap", "Deployment"] {
        assert!(
            restarted
                .metrics
                .drift_corrections
                .with_label_values(&[kind])
                .get()
                >= 1,
            "{kind}"
        );
    }

    // --- Deleting the resource: its children are owned by it (no kube-controller-manager here to
    // collect them; the owner references are what garbage collection follows).
    api.delete("line-1", &Default::default()).await.unwrap();
    restarted.task.abort();
    fake_kubelet.abort();

    // --- The operator's own metrics count what it did.
    let text = restarted.metrics.metrics();
    let sample = |series: &str| e2e_tests::http::sample(&text, series).unwrap_or_default();
    assert!(
        sample("socket_connector_operator_reconciliations_total{result=\"success\"}") >= 1.0,
        "{text}"
    );
    assert!(sample("socket_connector_operator_reconcile_duration_seconds_count") >= 1.0);
    assert!(
        operator
            .metrics
            .applies
            .with_label_values(&["Deployment"])
            .get()
            >= 3
    );

    // --- Leader election: one of two replicas leads; when it steps down the other takes over.
    let mut first = leader::join(client.clone(), ns, "replica-a", 3, 1)
        .await
        .unwrap();
    let mut second = leader::join(plane.client().await, ns, "replica-b", 3, 1)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        tokio::select! { _ = first.acquired() => {}, _ = second.acquired() => {} }
    })
    .await
    .expect("someone leads");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        first.is_leading() ^ second.is_leading(),
        "exactly one replica leads"
    );
    let (leader, mut standby) = if first.is_leading() {
        (first, second)
    } else {
        (second, first)
    };
    leader.release().await;
    tokio::time::timeout(WAIT, standby.acquired())
        .await
        .expect("the standby replica takes over");
    standby.release().await;
}

fn pod_hash(deployment: &Deployment) -> String {
    socket_connector_operator::fixtures::pod_metadata(deployment)
        .annotations
        .as_ref()
        .unwrap()[RESTART_HASH_ANNOTATION]
        .clone()
}

/// Runs the connector binary with the rendered container's command, args and environment (the
/// token taken from the Secret, as the kubelet would) and the ConfigMap at the mounted path.
/// `spec.pod` and `spec.service` settings, rendered and accepted by the API server.
async fn pod_and_service_settings_reach_the_children(client: &Client, ns: &str, tb_port: u16) {
    let mut edge = spec(tb_port, free_port(), free_port());
    edge["connector"]["socket"]["tls"] =
        json!({"certFile": "/etc/device-tls/tls.crt", "keyFile": "/etc/device-tls/tls.key"});
    edge["service"] =
        json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["198.18.0.0/24"]});
    edge["pod"] = json!({
        "annotations": {"k8s.v1.cni.cncf.io/networks": "device-net"},
        "nodeSelector": {"node-role.example.com/edge": "true"},
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-node-critical",
        "volumes": [{"name": "device-tls", "secret": {"secretName": "edge-device-tls"}}],
        "volumeMounts": [{"name": "device-tls", "mountPath": "/etc/device-tls", "readOnly": true}]
    });
    edge["networkPolicy"] =
        json!({"thingsboardCIDRs": ["198.18.0.1/32"], "deviceCIDRs": ["198.18.1.0/24"]});
    create(client, ns, "edge", edge).await.expect("create");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    let (deployment, service) = loop {
        if let (Some(d), Some(s)) = (
            deployments.get_opt("edge-0").await.unwrap(),
            services.get_opt("edge").await.unwrap(),
        ) {
            break (d, s);
        }
        assert!(Instant::now() < deadline, "edge children not created");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let template = deployment.spec.unwrap().template;
    let pod = template.spec.unwrap();
    assert_eq!(
        pod.node_selector.unwrap()["node-role.example.com/edge"],
        "true"
    );
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("edge"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(pod.volumes.unwrap().iter().any(|v| v.name == "device-tls"));
    assert!(pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == "/etc/device-tls"));
    assert_eq!(
        template.metadata.unwrap().annotations.unwrap()["k8s.v1.cni.cncf.io/networks"],
        "device-net"
    );
    let service = service.spec.unwrap();
    assert_eq!(service.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        service.load_balancer_source_ranges,
        Some(vec!["198.18.0.0/24".to_owned()])
    );
    let ports: Vec<String> = service
        .ports
        .unwrap()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    assert_eq!(ports, ["device"], "no metrics port on a LoadBalancer");

    // The NetworkPolicy, as the API server validated it; gone once the spec drops it.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let policy = policies
        .get("edge")
        .await
        .expect("a NetworkPolicy")
        .spec
        .unwrap();
    let egress = policy.egress.unwrap();
    let cidr = |peers: &Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>>| {
        peers.as_ref().unwrap()[0]
            .ip_block
            .as_ref()
            .unwrap()
            .cidr
            .clone()
    };
    assert_eq!(cidr(&egress[0].to), "198.18.0.1/32");
    assert_eq!(cidr(&policy.ingress.unwrap()[0].from), "198.18.1.0/24");
    let connectors: Api<SocketConnector> = Api::namespaced(client.clone(), ns);
    connectors
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"networkPolicy": null}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while policies.get_opt("edge").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "NetworkPolicy edge not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    connectors
        .delete("edge", &Default::default())
        .await
        .unwrap();
}

async fn extra_keys_are_kept_and_reported(client: &Client, ns: &str, tb_port: u16) {
    let mut with_extras = spec(tb_port, free_port(), free_port());
    with_extras["connector"]["description"] = json!("line 1 presses");
    let device = &mut with_extras["connector"]["devices"][0];
    device["accessToken"] = json!("device-token");
    device["telemetry"][0]["description"] = json!("temperature");
    let object = json!({"apiVersion": "tbsc.io/v1alpha1", "kind": "SocketConnector",
        "metadata": {"name": "extras"}, "spec": with_extras});
    let resource = kube::core::ApiResource::erase::<SocketConnector>(&());
    let raw: Api<kube::core::DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let strict = PatchParams {
        field_manager: Some("kubectl".to_owned()),
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..PatchParams::default()
    };
    raw.patch("extras", &strict, &Patch::Apply(&object))
        .await
        .expect("the API server accepts keys ThingsBoard ignores");
    let stored = raw.get("extras").await.unwrap();
    assert_eq!(
        stored.data["spec"]["connector"]["devices"][0]["accessToken"], "device-token",
        "not pruned"
    );
    let warned = wait_for(client, ns, "extras", "ValidWithWarnings", |sc| {
        condition(sc, "ConfigValid").is_some_and(|c| c.reason == "ValidWithWarnings")
    })
    .await;
    let message = &condition(&warned, "ConfigValid").unwrap().message;
    for path in [
        "spec.connector.description",
        "spec.connector.devices[0].accessToken",
        "spec.connector.devices[0].telemetry[0].description",
    ] {
        assert!(message.contains(path), "{path} not in {message:?}");
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let warned = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("extras")
                    && e.reason.as_deref() == Some("ConfigWarnings")
                    && e.note.as_deref().is_some_and(|n| n.contains("accessToken"))
            });
        if warned {
            break;
        }
        assert!(Instant::now() < deadline, "no ConfigWarnings event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    raw.delete("extras", &Default::default()).await.unwrap();
}

/// `kubectl get sockconn` as rows of words.
fn kubectl_get_sockconn(kubeconfig: &std::path::Path, ns: &str) -> Vec<Vec<String>> {
    let table = e2e_tests::control_plane::kubectl()
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "sockconn", "-n", ns])
        .output()
        .expect("kubectl get");
    String::from_utf8_lossy(&table.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The `line-1` connector's rendered children and the ports its spec sets.
struct RenderedPod<'a> {
    deployment: &'a Deployment,
    config_map: &'a ConfigMap,
    device_port: u16,
    metrics_port: u16,
}

async fn run_rendered_pod(
    client: &Client,
    ns: &str,
    rendered: &RenderedPod<'_>,
    broker: &mut Mosquitto,
    kubeconfig: &std::path::Path,
) {
    let RenderedPod {
        deployment,
        config_map,
        device_port,
        metrics_port,
    } = *rendered;
    let pod = socket_connector_operator::fixtures::pod_spec(deployment);
    let container = &pod.containers[0];
    assert_eq!(
        container.command.as_deref(),
        Some(&["socket-connector".to_owned()][..])
    );
    // Each volume as the kubelet would mount it: the ConfigMap's file and the projected
    // Secret keys, under a temporary directory standing in for the mount path.
    let dir = tempfile::tempdir().unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.as_ref().unwrap() {
        let local = dir.path().join(&mount.name);
        std::fs::create_dir_all(&local).unwrap();
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap();
        if volume.config_map.is_some() {
            std::fs::write(
                local.join("socket.json"),
                &config_map.data.as_ref().unwrap()["socket.json"],
            )
            .unwrap();
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            let projection = source.secret.as_ref().expect("a Secret projection");
            let secret = secrets.get(&projection.name).await.unwrap();
            for item in projection.items.iter().flatten() {
                let value = &secret.data.as_ref().unwrap()[&item.key];
                std::fs::write(local.join(&item.path), &value.0).unwrap();
            }
        }
        mounts.push((mount.mount_path.clone(), local.display().to_string()));
    }
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|arg| {
            mounts.iter().fold(arg, |arg, (mount, local)| {
                arg.replace(mount.as_str(), local)
            })
        })
        .collect();
    assert_eq!(
        container.env, None,
        "credentials come as files, not variables"
    );
    assert!(
        args.contains(&format!("0.0.0.0:{metrics_port}")),
        "the pod serves /status on the port the operator asks: {args:?}"
    );
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    let mut child = std::process::Command::new(e2e_tests::connector::binary())
        .args(&args)
        .env_remove("TB_ACCESS_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the rendered container");
    let deadline = Instant::now() + WAIT;
    let mut device = loop {
        match std::net::TcpStream::connect(("127.0.0.1", device_port)) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("rendered connector never listened on {device_port}: {e}"),
        }
    };
    std::io::Write::write_all(&mut device, b"21.5").unwrap();
    let telemetry = peer.next_on("v1/gateway/telemetry").await;
    assert_eq!(
        telemetry_entries(&telemetry)[0],
        (
            "Press 1".to_owned(),
            telemetry_entries(&telemetry)[0].1,
            json!({"temp": "21.5"})
        )
    );

    // --- The pod as the ReplicaSet controller and the kubelet would report it (Running, with its
    // IP): the operator asks it for its ThingsBoard link, and the condition and `kubectl get`
    // show what the connector says, within seconds.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let labels = socket_connector_operator::fixtures::pod_metadata(deployment)
        .labels
        .clone();
    let pod_object: Pod = serde_json::from_value(json!({
        "metadata": {"name": "line-1-0-7d9f", "labels": labels},
        "spec": {"containers": [{"name": "connector", "image": "socket-connector"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod_object)
        .await
        .unwrap();
    pods.patch_status(
        "line-1-0-7d9f",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}]}})),
    )
    .await
    .unwrap();
    let link = |sc: &SocketConnector| {
        condition(sc, "ThingsBoardConnected").map(|c| (c.status.clone(), c.reason.clone()))
    };
    let pair = |status: &str, reason: &str| Some((status.to_owned(), reason.to_owned()));
    let connected = wait_for(client, ns, "line-1", "ThingsBoardConnected", |sc| {
        link(sc) == pair("True", "Connected")
    })
    .await;
    assert_eq!(
        condition(&connected, "ThingsBoardConnected")
            .unwrap()
            .message,
        "1/1 connector pods connected to ThingsBoard"
    );
    broker.kill();
    let lost = wait_for(client, ns, "line-1", "ThingsBoard lost", |sc| {
        link(sc) == pair("False", "ConnectionRefused")
    })
    .await;
    let message = &condition(&lost, "ThingsBoardConnected").unwrap().message;
    assert!(
        message.starts_with("pod line-1-0-7d9f: ")
            && message.ends_with("(1 of 1 pods not connected)"),
        "{message}"
    );
    assert!(
        is(&lost, "Ready", "True"),
        "a ThingsBoard outage alone does not make it unready"
    );
    assert_eq!(
        kubectl_get_sockconn(kubeconfig, ns)[1][3],
        "ConnectionRefused"
    );
    broker.restart();
    wait_for(client, ns, "line-1", "ThingsBoard back", |sc| {
        link(sc) == pair("True", "Connected")
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    wait_for(client, ns, "line-1", "pod gone silent", |sc| {
        link(sc) == pair("Unknown", "StatusUnavailable")
    })
    .await;
    pods.delete("line-1-0-7d9f", &Default::default())
        .await
        .unwrap();
    wait_for(client, ns, "line-1", "pod deleted", |sc| {
        link(sc) == pair("Unknown", "NoPods")
    })
    .await;
}

/// The rendered `socket.json` of the `line-1` connector.
async fn socket_json(config_maps: &Api<ConfigMap>) -> String {
    let config_map = config_maps.get("line-1-config").await.unwrap();
    config_map.data.unwrap_or_default()["socket.json"].clone()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
