//! A SocketConnector on a real node: the real kube-apiserver, kube-controller-manager,
//! kube-scheduler and kubelet with containerd, runc and the CNI bridge (tests/src/node.rs), the
//! image tests/image/build.sh builds, and the operator installed by `helm install` as a pod of
//! that image. In namespaces that enforce the restricted Pod Security Standard: a SocketConnector
//! created before its Secret says `SecretMissing` with the kubelet's words (the operator's
//! ServiceAccount cannot read Secrets); once the Secret exists the connector pod is admitted,
//! scheduled, started and made ready by its real probes; a device delivers through it to
//! Mosquitto, by its pod IP and through its Service (kube-proxy); a pod deleted while ThingsBoard
//! is down comes back with its queue on its PersistentVolumeClaim (a hostPath volume) and
//! delivers it; with `watchSecrets` (a chart upgrade) a rotated token reaches the running pod
//! within seconds and without a restart, and a pod waiting for a Secret is replaced once it
//! exists; deleting the SocketConnector removes every child through the garbage collector; the
//! shipped examples, applied with kubectl, become Ready.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e_tests::chart::{install, upgrade};
use e2e_tests::control_plane::ControlPlane;
use e2e_tests::http::{get, sample};
use e2e_tests::image::archive;
use e2e_tests::node::{Node, BRIDGE_ADDRESS};
use e2e_tests::peer::value;
use e2e_tests::{free_port, ok, Mosquitto, ThingsBoardPeer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node as KubeNode, PersistentVolume, Pod, Secret, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use socket_connector_operator::build::Defaults;
use socket_connector_operator::crd::SocketConnector;

/// Pulling nothing, but starting sandboxes and containers on 2 busy cores takes a while.
const WAIT: Duration = Duration::from_secs(120);

async fn wait_until<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    wait_within(WAIT, what, check).await
}

async fn wait_within<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for `name`'s `Ready=False SecretMissing` and returns its message (the kubelet's words,
/// naming the waiting pod).
async fn secret_missing(connectors: &Api<SocketConnector>, name: &str) -> String {
    wait_until(&format!("{name}: Ready=False SecretMissing"), async || {
        let sc = connectors.get(name).await.ok()?;
        let ready = sc
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "SecretMissing")?;
        Some(ready.message)
    })
    .await
}

/// The connector's Running and Ready pods: (name, IP).
/// The label selector of line-1's pods.
const LINE_1: &str = "app.kubernetes.io/instance=line-1";

async fn ready_pods(pods: &Api<Pod>, selector: &str) -> Vec<(String, String)> {
    let listed = pods
        .list(&ListParams::default().labels(selector))
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

/// A namespace that enforces the restricted Pod Security Standard.
async fn restricted_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                   "pod-security.kubernetes.io/enforce-version": "latest"}}}))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

async fn create_secret(client: &Client, namespace: &str, name: &str, data: serde_json::Value) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A hostPath PersistentVolume of the node-local class, writable by the connector's user
/// (hostPath volumes get no fsGroup ownership).
async fn host_path_volume(client: &Client, name: &str, dir: &std::path::Path, size: &str) {
    std::os::unix::fs::chown(dir, Some(65532), Some(65532)).unwrap();
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"storageClassName": "node-local", "capacity": {"storage": size},
                 "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": dir, "type": "Directory"}}}))
    .unwrap();
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .unwrap();
}

/// Installs the chart as a user would (its CRD, RBAC and the operator as a pod of the image) and
/// waits until the operator pod is ready.
async fn install_operator(plane: &ControlPlane, client: &Client) {
    restricted_namespace(client, "operator-system").await;
    let kubeconfig = plane.kubeconfig_file(&plane.kubeconfig_yaml(), "admin.kubeconfig");
    install(&kubeconfig, &[]);
    operator_leading(client, "").await;
}

/// Waits until the operator pod whose arguments include `flag` (any, with "") is ready and holds
/// the leader Lease: after an upgrade, the new pod is the one reconciling.
async fn operator_leading(client: &Client, flag: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "operator-system");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "operator-system");
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = ready_pods(&pods, "app.kubernetes.io/name=socket-connector-operator").await;
        let holder = leases
            .get_opt("socket-connector-operator")
            .await
            .ok()
            .flatten()
            .and_then(|lease| lease.spec?.holder_identity);
        let leading = ready.iter().find(|(name, _)| Some(name) == holder.as_ref());
        let flagged = match leading {
            Some((name, _)) => pods.get(name).await.ok().is_some_and(|pod| {
                let container = pod.spec.and_then(|spec| spec.containers.into_iter().next());
                let args = container.and_then(|c| c.args).unwrap_or_default();
                args.iter().any(|arg| arg.contains(flag))
            }),
            None => false,
        };
        if flagged {
            return;
        }
        if Instant::now() > deadline {
            let events: Api<k8s_openapi::api::core::v1::Event> =
                Api::namespaced(client.clone(), "operator-system");
            let pods = serde_json::to_string(&pods.list(&ListParams::default()).await.ok())
                .unwrap_or_default();
            let events: Vec<String> = events
                .list(&ListParams::default())
                .await
                .map(|list| list.items.into_iter().filter_map(|e| e.message).collect())
                .unwrap_or_default();
            panic!("no operator pod {flag} ready and leading within {WAIT:?}: {pods}\n{events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the operator's own ServiceAccount (the chart's RBAC) can read a Secret in `namespace`.
async fn operator_reads_secrets(plane: &ControlPlane, client: &Client, namespace: &str) -> u16 {
    let token = ControlPlane::service_account_token(
        client,
        "operator-system",
        "sco-socket-connector-operator",
    )
    .await;
    let as_operator = ControlPlane::client_from(&plane.kubeconfig_for_token(&token)).await;
    let secrets: Api<Secret> = Api::namespaced(as_operator, namespace);
    match secrets.get_opt("gateway").await {
        Err(kube::Error::Api(status)) => status.code,
        Ok(_) => 200,
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_connector_runs_on_a_real_node() {
    let plane = ControlPlane::start_for_pods();
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

    // The operator runs as the chart installs it: a pod of the image, in-cluster credentials of
    // its ServiceAccount (through the `kubernetes` Service), the chart's RBAC.
    install_operator(&plane, &client).await;
    let ns = "plant";
    restricted_namespace(&client, ns).await;

    // ThingsBoard's MQTT endpoint on the bridge address, where pods reach the node.
    let tb_port = free_port();
    // Its log names the username (the access token) of each connection.
    // (Mosquitto writes it after dropping root for its own user.)
    let broker_log = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(
        broker_log.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let mut broker = Mosquitto::start_with(&[
        &format!("listener {tb_port} {BRIDGE_ADDRESS}"),
        &format!("log_dest file {}", broker_log.path().display()),
        "log_type notice",
    ]);
    let mut peer = ThingsBoardPeer::connect(broker.port()).await;

    // Queues on hostPath volumes of a local class without a provisioner, the cluster's default
    // (the examples' claims name no class).
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({"metadata": {"name": "node-local",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}))
    .unwrap();
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let volume_dirs: Vec<tempfile::TempDir> =
        (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    host_path_volume(&client, "queue-1", volume_dirs[0].path(), "2Gi").await;

    // The SocketConnector comes before its Secret. The operator cannot read Secrets (least
    // privilege): the kubelet reports the missing one, and the operator shows what it says.
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
    let waiting = secret_missing(&connectors, "line-1").await;
    assert!(
        waiting.contains("line-1-0-") && waiting.contains("\"gateway\""),
        "{waiting}"
    );
    assert_eq!(operator_reads_secrets(&plane, &client, ns).await, 403);
    create_secret(&client, ns, "gateway", json!({"token": "gateway-token"})).await;

    // Admitted under the restricted standard, scheduled, started, ready by its own probes; the
    // operator reads ThingsBoardConnected from the pod itself.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (first_pod, first_ip) = wait_until("a ready connector pod", async || {
        ready_pods(&pods, LINE_1).await.into_iter().next()
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
    let (second_pod, second_ip) = wait_until("a replacement pod", async || {
        ready_pods(&pods, LINE_1)
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

    // Two replicas, two gateway identities. ThingsBoard sends a device's RPC to the gateway
    // that connected it; Mosquitto hands it to every gateway, and the others answer with an
    // error. A device on the second replica's pod gets its downlink
    // from that pod, and its answer names the device.
    create_secret(
        &client,
        ns,
        "lamps",
        json!({"gateway-a": "lamp-a", "gateway-b": "lamp-b"}),
    )
    .await;
    let lamps: SocketConnector = serde_json::from_value(json!({
        "apiVersion": "tbsc.io/v1alpha1", "kind": "SocketConnector",
        "metadata": {"name": "lamps"},
        "spec": {
            "replicas": 2,
            "connector": {
                "name": "Lamps",
                "socket": {"type": "TCP", "address": "0.0.0.0", "port": 5001},
                "devices": [{"address": "*:*", "deviceName": "Lamp",
                             "telemetry": [{"key": "state", "byteFrom": 0, "byteTo": -1}],
                             "serverSideRpc": [{"methodRPC": "setLed", "withResponse": true,
                                                "methodProcessing": "write", "encoding": "utf-8"}]}]
            },
            "thingsboard": {"host": BRIDGE_ADDRESS, "port": tb_port,
                            "accessToken": {"name": "lamps", "key": "gateway-a"},
                            "additionalAccessTokens": [{"name": "lamps", "key": "gateway-b"}],
                            "remoteConfiguration": true}
        }
    }))
    .unwrap();
    connectors
        .create(&PostParams::default(), &lamps)
        .await
        .expect("create the two-replica SocketConnector");
    let second_replica = wait_until("the second replica's pod ready", async || {
        let ready = ready_pods(&pods, "app.kubernetes.io/instance=lamps,tbsc.io/replica=1").await;
        ready.into_iter().next().map(|(_, ip)| ip)
    })
    .await;
    let mut lamp = TcpStream::connect((second_replica.as_str(), 5001)).unwrap();
    lamp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    lamp.write_all(b"off").unwrap();
    assert_eq!(
        peer.telemetry_values(1).await,
        [value("Lamp", "state", "off")]
    );
    peer.publish(
        "v1/gateway/rpc",
        json!({"device": "Lamp", "data": {"id": 7, "method": "setLed", "params": "on"}}),
    )
    .await;
    let mut written = [0u8; 2];
    std::io::Read::read_exact(&mut lamp, &mut written).expect("the RPC reaches the device");
    assert_eq!(&written, b"on");
    // Every gateway on the broker answers: line-1's pod (no such device), the first replica (no
    // connection to it) and the second.
    let answered = json!({"device": "Lamp", "id": 7, "data": {"result": "ok"}});
    let mut replies = Vec::new();
    while !replies.contains(&answered) && replies.len() < 3 {
        let reply = peer.next_on("v1/gateway/rpc").await.json();
        // Mosquitto also hands the request itself back to the peer.
        if reply.pointer("/data/method").is_none() {
            replies.push(reply);
        }
    }
    assert!(replies.contains(&answered), "{replies:?}");
    drop(lamp);

    // With remote configuration on, ThingsBoard's UI switches the connector off and on: the
    // pods close their device socket and turn unready, and `kubectl get sockconn` says why.
    let configured = async |status: &str, reason: &str| {
        let wanted = Some((status.to_owned(), reason.to_owned()));
        wait_until(&format!("ConfiguredInThingsBoard {reason}"), async || {
            let sc = connectors.get("lamps").await.ok()?;
            (ready_condition(&sc, "ConfiguredInThingsBoard") == wanted).then_some(sc)
        })
        .await
    };
    configured("False", "SpecConnector").await;
    peer.set_shared("active_connectors", json!([])).await;
    configured("True", "SwitchedOffInThingsBoard").await;
    assert!(
        TcpStream::connect((second_replica.as_str(), 5001)).is_err(),
        "the device port is closed"
    );
    wait_until("lamps not ready while switched off", async || {
        let sc = connectors.get("lamps").await.ok()?;
        (ready_condition(&sc, "Ready")?.0 == "False").then_some(())
    })
    .await;
    peer.set_shared("active_connectors", json!(["Lamps"])).await;
    configured("False", "SpecConnector").await;
    wait_until("lamps ready again", async || {
        let sc = connectors.get("lamps").await.ok()?;
        (ready_condition(&sc, "Ready")? == ("True".to_owned(), "Available".to_owned()))
            .then_some(())
    })
    .await;
    connectors
        .delete("lamps", &DeleteParams::default())
        .await
        .unwrap();

    // With `watchSecrets` (a chart upgrade) the operator watches the Secrets' metadata. A rotated
    // token reaches the running pod within seconds, without a restart: the operator annotates
    // the pod, and the kubelet (whose periodic sync here is 10 minutes) refreshes its volume.
    let kubeconfig = plane.kubeconfig_file(&plane.kubeconfig_yaml(), "admin.kubeconfig");
    upgrade(&kubeconfig, &["--set", "watchSecrets=true"]);
    operator_leading(&client, "--watch-secrets").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let connected_as = |token: &str| {
        let log = std::fs::read_to_string(broker_log.path()).unwrap_or_default();
        log.contains(&format!("u'{token}'"))
    };
    assert!(connected_as("gateway-token") && !connected_as("gateway-token-2"));
    let restarts = async || {
        let pod = pods.get(&second_pod).await.unwrap();
        let statuses = pod.status.and_then(|s| s.container_statuses).unwrap();
        statuses[0].restart_count
    };
    let restarts_before = restarts().await;
    let rotation = json!({"stringData": {"token": "gateway-token-2"}});
    secrets
        .patch("gateway", &PatchParams::default(), &Patch::Merge(&rotation))
        .await
        .unwrap();
    wait_within(
        Duration::from_secs(30),
        "the connector reconnecting with the rotated token",
        async || connected_as("gateway-token-2").then_some(()),
    )
    .await;
    let pod = pods.get(&second_pod).await.unwrap();
    let told = pod.annotations().get("tbsc.io/secret-versions").cloned();
    assert!(
        told.is_some_and(|v| v.starts_with("gateway=")),
        "{:?}",
        pod.metadata.annotations
    );
    assert_eq!(
        restarts().await,
        restarts_before,
        "rotated without a restart"
    );
    deliver(&second_ip, &mut peer, "22.9").await;

    // A SocketConnector whose Secret comes later: the pod that waits for it is replaced as soon
    // as it exists, not when the kubelet's mount retry (backing off) comes round.
    let late: SocketConnector = serde_json::from_value(json!({
        "apiVersion": "tbsc.io/v1alpha1", "kind": "SocketConnector",
        "metadata": {"name": "late"},
        "spec": {
            "connector": {
                "name": "Late",
                "socket": {"type": "TCP", "address": "0.0.0.0", "port": 5002},
                "devices": [{"address": "*:*", "deviceName": "Late device",
                             "telemetry": [{"key": "v", "byteFrom": 0, "byteTo": -1}]}]
            },
            "thingsboard": {"host": BRIDGE_ADDRESS, "port": tb_port,
                            "accessToken": {"name": "late", "key": "token"}}
        }
    }))
    .unwrap();
    connectors
        .create(&PostParams::default(), &late)
        .await
        .unwrap();
    let message = secret_missing(&connectors, "late").await;
    let waiting = message
        .strip_prefix("pod ")
        .and_then(|rest| rest.split_once(':'))
        .map(|(pod, _)| pod.to_owned())
        .unwrap_or_else(|| panic!("no pod named in {message}"));
    // Four failed mounts: the kubelet's next retry is 8 s or more away, far beyond the operator's
    // reaction, so the replacement is the operator's doing.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    wait_until("the kubelet backing off the mount", async || {
        let failed = events
            .list(
                &ListParams::default()
                    .fields(&format!("involvedObject.name={waiting},reason=FailedMount")),
            )
            .await
            .ok()?;
        (failed.items.iter().filter_map(|e| e.count).sum::<i32>() >= 4).then_some(())
    })
    .await;
    create_secret(&client, ns, "late", json!({"token": "late-token"})).await;
    let (started, _) = wait_until("late: a ready pod", async || {
        ready_pods(&pods, "app.kubernetes.io/instance=late")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_ne!(started, waiting, "the waiting pod was replaced");
    let restarted = events
        .list(&ListParams::default().fields("involvedObject.name=late,reason=PodRestarted"))
        .await
        .unwrap();
    assert!(
        restarted
            .items
            .iter()
            .any(|e| e.message.as_deref().is_some_and(|m| m.contains(&waiting))),
        "{:?}",
        restarted.items
    );
    wait_until("late: connected with its token", async || {
        connected_as("late-token").then_some(())
    })
    .await;
    connectors
        .delete("late", &DeleteParams::default())
        .await
        .unwrap();

    // Deleting the SocketConnector removes every child through the garbage collector.
    connectors
        .delete("line-1", &DeleteParams::default())
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let children = ListParams::default().labels(LINE_1);
    wait_until("children collected", async || {
        let left = deployments.list(&children).await.ok()?.items.len()
            + config_maps.list(&children).await.ok()?.items.len()
            + services.list(&children).await.ok()?.items.len()
            + pods.list(&children).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;

    // The shipped examples, applied as the docs say (their Secrets first), run under the
    // restricted standard: every pod admitted, started and ready (ThingsBoard's host in them does
    // not resolve here; pods stay ready and queue).
    let examples = "examples";
    restricted_namespace(&client, examples).await;
    host_path_volume(&client, "queue-2", volume_dirs[1].path(), "1Gi").await;
    create_secret(
        &client,
        examples,
        "gateway-token",
        json!({"accessToken": "a"}),
    )
    .await;
    create_secret(
        &client,
        examples,
        "meter-gateways",
        json!({"gateway-a": "b", "gateway-b": "c"}),
    )
    .await;
    for example in ["tcp-string-device.yaml", "udp-binary-device.yaml"] {
        let path = e2e_tests::chart::root()
            .join("examples/kubernetes")
            .join(example);
        ok(
            &e2e_tests::run(e2e_tests::control_plane::kubectl().args([
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "apply",
                "-n",
                examples,
                "-f",
                path.to_str().unwrap(),
            ])),
            example,
        );
    }
    let examples_api: Api<SocketConnector> = Api::namespaced(client.clone(), examples);
    for name in ["boiler-room", "meters"] {
        wait_until(&format!("example {name} Ready"), async || {
            let sc = examples_api.get(name).await.ok()?;
            let ready = ready_condition(&sc, "Ready")?;
            (ready.0 == "True").then_some(())
        })
        .await;
    }
    drop(node);
}
