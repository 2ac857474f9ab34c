//! Operator benchmark on the real test control plane: N SocketConnectors (default 500) created at
//! once, time until all are Ready, API writes in a quiet minute and after an operator restart
//! (from the apiserver's own metrics), and the operator's peak RSS. Prints one JSON line.
//!
//! `cargo run --release -p e2e-tests --bin operator-bench -- --connectors 500`

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::connector::workspace_binary;
use e2e_tests::control_plane::{fake_kubelet, write_requests, ControlPlane};
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use socket_connector_operator::crd::{SecretKeyRef, SocketConnector};

const NAMESPACE: &str = "bench";
const RESOURCES: [&str; 5] = [
    "configmaps",
    "deployments",
    "services",
    "socketconnectors",
    "events",
];

fn flag(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_operator(kubeconfig: &std::path::Path) -> Child {
    Command::new(workspace_binary(
        "socket-connector-operator",
        "socket-connector-operator",
    ))
    .args([
        "run",
        "--namespace",
        NAMESPACE,
        "--metrics-address",
        "127.0.0.1:0",
    ])
    .env("KUBECONFIG", kubeconfig)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(
        std::fs::File::create(std::env::temp_dir().join("operator-bench-operator.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
    )
    .spawn()
    .expect("start the operator")
}

/// Peak and current resident memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn writes(plane: &ControlPlane, client: &Client) -> f64 {
    let metrics = plane.metrics(client).await;
    RESOURCES.iter().map(|r| write_requests(&metrics, r)).sum()
}

async fn ready_count(api: &Api<SocketConnector>) -> usize {
    api.list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .iter()
                .filter(|sc| {
                    sc.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count = flag("--connectors", 500) as usize;
    let quiet = Duration::from_secs(flag("--quiet-seconds", 60));
    let plane = ControlPlane::start();
    let client = plane.client().await;
    let kubeconfig = plane.kubeconfig_file(&plane.kubeconfig_yaml(), "bench.kubeconfig");
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.patch(
        "socketconnectors.tbsc.io",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(socket_connector_operator::crd::crd()),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "gateway-token"}, "stringData": {"accessToken": "t"}}),
            )?,
        )
        .await?;
    let kubelet = fake_kubelet(client.clone(), NAMESPACE);
    let mut operator = start_operator(&kubeconfig);

    let api: Api<SocketConnector> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    stream::iter(0..count)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let mut spec = socket_connector_operator::fixtures::tcp_spec();
                spec.thingsboard.access_token = Some(SecretKeyRef {
                    name: "gateway-token".into(),
                    key: "accessToken".into(),
                });
                let object = SocketConnector::new(&format!("connector-{i:04}"), spec);
                if let Err(e) = api.create(&PostParams::default(), &object).await {
                    eprintln!("create connector-{i:04}: {e}");
                }
            }
        })
        .await;
    let created = started.elapsed();
    let deadline = started + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        let ready = ready_count(&api).await;
        if ready >= count {
            break;
        }
        if Instant::now() > deadline {
            let _ = operator.kill();
            let _ = operator.wait();
            anyhow::bail!("only {ready} of {count} Ready within 10 minutes");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("{ready}/{count} Ready after {:.0?}", started.elapsed());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = started.elapsed();
    let (peak_rss, rss) = memory(operator.id());

    // Steady state: no change anywhere, count writes for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = writes(&plane, &client).await;
    tokio::time::sleep(quiet).await;
    let steady = writes(&plane, &client).await - before;

    // Restart: the new operator reconciles every object and must write nothing.
    let _ = operator.kill();
    let _ = operator.wait();
    let before = writes(&plane, &client).await;
    let mut operator = start_operator(&kubeconfig);
    tokio::time::sleep(quiet).await;
    let after_restart = writes(&plane, &client).await - before;
    let (restart_peak_rss, _) = memory(operator.id());
    let _ = operator.kill();
    let _ = operator.wait();
    kubelet.abort();

    println!(
        "{}",
        json!({
            "connectors": count,
            "create_seconds": created.as_secs_f64(),
            "all_ready_seconds": all_ready.as_secs_f64(),
            "steady_state_window_seconds": quiet.as_secs(),
            "writes_in_steady_state": steady,
            "writes_after_restart": after_restart,
            "operator_peak_rss_mib": peak_rss,
            "operator_rss_mib": rss,
            "restarted_operator_peak_rss_mib": restart_peak_rss,
        })
    );
    Ok(())
}
