//! A SocketConnector on a real node: the real kube-apiserver, kube-controller-manager,
//! kube-scheduler and kubelet with containerd, runc and the CNI bridge (tests/src/node.rs), the
//! image tests/image/build.sh builds, and the operator. In a namespace that enforces the
//! restricted Pod Security Standard, the connector pod is admitted, scheduled, started and made
//! ready by its real probes; a device delivers through it to Mosquitto, by its pod IP and through
//! its Service (kube-proxy); a pod deleted while
//! ThingsBoard is down comes back with its queue on its PersistentVolumeClaim (a hostPath volume)
//! and delivers it; deleting the SocketConnector removes every child through the garbage
//! collector.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::control_plane::ControlPlane;
use e2e_tests::http::{get, sample};
use e2e_tests::image::archive;
use e2e_tests::node::{Node, BRIDGE_ADDRESS};
use e2e_tests::peer::value;
use e2e_tests::{free_port, Mosquitto, ThingsBoardPeer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node as KubeNode, PersistentVolume, Pod, Secret, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use socket_connector_operator::build::Defaults;
use socket_connector_operator::controller::{self, Context};
use socket_connector_operator::crd::SocketConnector;
use socket_connector_operator::metrics::OperatorMetrics;

/// Pulling nothing, but starting sandboxes and containers on 2 busy cores takes a while.
const WAIT: Duration = Duration::from_secs(120);

async fn wait_until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The connector's Running and Ready pods: (name, IP).
async fn ready_pods(pods: &Api<Pod>) -> Vec<(String, String)> {
    let listed = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=line-1"))
        .await
        .unwrap();
    listed
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.phase.as_deref() == Some("Running"))
                .then(|| (pod.name_any(), status.pod_ip.clone().unwrap_or_default()))
        })
        .collect()
}

fn ready_condition(sc: &SocketConnector, type_: &str) -> Option<(String, String)> {
    sc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Sends one frame to the device port at `ip` (a pod's or the Service's); the peer receives it.
async fn deliver(ip: &str, peer: &mut ThingsBoardPeer, frame: &str) {
    let mut device = TcpStream::connect((ip, 5000)).expect("connect to the device port");
    device.write_all(frame.as_bytes()).unwrap();
    let values = peer.telemetry_values(1).await;
    assert_eq!(values, [value("Press 1", "temp", frame)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_connector_runs_on_a_real_node() {
    let plane = ControlPlane::start();
    let client: Client = plane.client().await;
    let image = archive("amd64");
    let defaults = Defaults::default();
    let node = Node::start(&plane, &[(&image, defaults.image.as_str())]);

    // The node registers and becomes Ready (runtime and CNI up).
    let nodes: Api<KubeNode> = Api::all(client.clone());
    wait_until("node Ready", async || {
        let ready = nodes
            .get_opt(&node.name)
            .await
            .ok()
            .flatten()?
            .status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = socket_connector_operator::crd::crd();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "socketconnectors.tbsc.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established")
    .unwrap();
    let ns = "plant";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                   "pod-security.kubernetes.io/enforce-version": "latest"}}}))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "gateway"}, "stringData": {"token": "gateway-token"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    // ThingsBoard's MQTT endpoint on the bridge address, where pods reach the node.
    let tb_port = free_port();
    let mut broker = Mosquitto::start_with(&[&format!("listener {tb_port} {BRIDGE_ADDRESS}")]);
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;

    // The queue's volume: a local class without a provisioner and one hostPath volume, writable
    // by the connector's user (hostPath volumes get no fsGroup ownership).
    let volume_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(volume_dir.path(), Some(65532), Some(65532)).unwrap();
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({"metadata": {"name": "node-local"},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "queue-1"},
        "spec": {"storageClassName": "node-local", "capacity": {"storage": "2Gi"},
                 "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": volume_dir.path(), "type": "Directory"}}}))
    .unwrap();
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .unwrap();

    let metrics = Arc::new(OperatorMetrics::new());
    let context = Arc::new(
        Context::new(
            client.clone(),
            defaults.clone(),
            metrics,
            "node-test".into(),
        )
        .with_pod_status_interval(Duration::from_secs(2)),
    );
    let operator = tokio::spawn(controller::run(context, Some(ns.to_owned())));
    let connectors: Api<SocketConnector> = Api::namespaced(client.clone(), ns);
    let connector: SocketConnector = serde_json::from_value(json!({
        "apiVersion": "tbsc.io/v1alpha1", "kind": "SocketConnector",
        "metadata": {"name": "line-1"},
        "spec": {
            "connector": {
                "name": "Line 1",
                "socket": {"type": "TCP", "address": "0.0.0.0", "port": 5000},
                "devices": [{"address": "*:*", "deviceName": "Press 1",
                             "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1}]}]
            },
            "thingsboard": {"host": BRIDGE_ADDRESS, "port": tb_port,
                            "accessToken": {"name": "gateway", "key": "token"}},
            "queue": {"persistence": {"size": "2Gi", "storageClassName": "node-local"},
                      "fsync": "always"}
        }
    }))
    .unwrap();
    connectors
        .create(&PostParams::default(), &connector)
        .await
        .expect("create the SocketConnector");

    // Admitted under the restricted standard, scheduled, started, ready by its own probes; the
    // operator reads ThingsBoardConnected from the pod itself.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (first_pod, first_ip) = wait_until("a ready connector pod", async || {
        ready_pods(&pods).await.into_iter().next()
    })
    .await;
    assert!(first_ip.starts_with("198.18.0."), "pod IP {first_ip}");
    wait_until("Ready and ThingsBoardConnected", async || {
        let sc = connectors.get("line-1").await.ok()?;
        let ready = ready_condition(&sc, "Ready")? == ("True".to_owned(), "Available".to_owned());
        let linked = ready_condition(&sc, "ThingsBoardConnected")?
            == ("True".to_owned(), "Connected".to_owned());
        (ready && linked).then_some(())
    })
    .await;
    deliver(&first_ip, &mut peer, "21.5").await;
    // And through the Service: kube-proxy's rules send its ClusterIP to the pod.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let cluster_ip = services
        .get("line-1")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    assert!(cluster_ip.starts_with("198.19."), "ClusterIP {cluster_ip}");
    wait_until("kube-proxy's rule for the Service", async || {
        let rules = std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&rules.stdout)
            .contains(&format!("-d {cluster_ip}/32"))
            .then_some(())
    })
    .await;
    deliver(&cluster_ip, &mut peer, "21.7").await;

    // ThingsBoard goes away; what the device sends waits in the queue on the claim. The pod is
    // deleted and comes back (ReplicaSet) on the same claim, holding the queue although it never
    // read a frame; when ThingsBoard returns it delivers it.
    broker.kill();
    let mut device = TcpStream::connect((first_ip.as_str(), 5000)).unwrap();
    device.write_all(b"23.5").unwrap();
    let first_metrics = format!("{first_ip}:9100").parse().unwrap();
    wait_until("a queued record in the first pod", async || {
        let text = get(first_metrics, "/metrics").1;
        (sample(&text, "socket_connector_queue_records")? >= 1.0).then_some(())
    })
    .await;
    drop(device);
    pods.delete(&first_pod, &DeleteParams::default())
        .await
        .unwrap();
    let (_, second_ip) = wait_until("a replacement pod", async || {
        ready_pods(&pods)
            .await
            .into_iter()
            .find(|(name, _)| *name != first_pod)
    })
    .await;
    let second_metrics = format!("{second_ip}:9100").parse().unwrap();
    let queued = |text: &str| {
        let frames = sample(
            text,
            "socket_connector_frames_received_total{device=\"Press 1\"}",
        );
        (
            sample(text, "socket_connector_queue_records"),
            frames.unwrap_or(0.0),
        )
    };
    let (records, frames) = queued(&get(second_metrics, "/metrics").1);
    assert!(
        records.is_some_and(|n| n >= 1.0) && frames == 0.0,
        "{records:?} {frames}"
    );
    broker.restart();
    wait_until(
        "the queue delivered after ThingsBoard returns",
        async || {
            let text = get(second_metrics, "/metrics").1;
            let acknowledged = sample(&text, "socket_connector_publish_ack_latency_seconds_count")?;
            (queued(&text).0? == 0.0 && acknowledged >= 1.0).then_some(())
        },
    )
    .await;
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;
    deliver(&second_ip, &mut peer, "22.5").await;

    // Deleting the SocketConnector removes every child through the garbage collector.
    connectors
        .delete("line-1", &DeleteParams::default())
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let children = ListParams::default().labels("app.kubernetes.io/instance=line-1");
    wait_until("children collected", async || {
        let left = deployments.list(&children).await.ok()?.items.len()
            + config_maps.list(&children).await.ok()?.items.len()
            + services.list(&children).await.ok()?.items.len()
            + pods.list(&children).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
    operator.abort();
    drop(node);
}
