//! The Helm chart against the real test API server: lint, render with several values files and
//! validate every object server-side, reject bad values, install it, then run the operator with
//! the chart's ServiceAccount token to prove its RBAC is enough, and not more.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e_tests::chart::{chart, helm, install, root, template, KUBE_VERSION};
use e2e_tests::control_plane::{fake_kubelet, ControlPlane};
use e2e_tests::ok;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::json;
use socket_connector_operator::crd::{SecretKeyRef, SocketConnector};

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = e2e_tests::control_plane::kubectl()
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// `kubectl apply --server-side -f <file of this repository>`.
fn apply_file(kubeconfig: &Path, file: &str) {
    let path = root().join(file);
    let path = path.to_str().expect("UTF-8 path");
    ok(
        &kubectl(kubeconfig, &["apply", "--server-side", "-f", path], None),
        &format!("apply {file}"),
    );
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let chart_crd =
        std::fs::read_to_string(chart().join("crds/socketconnectors.tbsc.io.yaml")).unwrap();
    let crd = std::fs::read_to_string(root().join("crds/socketconnectors.tbsc.io.yaml")).unwrap();
    assert!(chart_crd == crd, "charts/socket-connector-operator/crds/ must be a copy of crds/ (cp crds/*.yaml charts/socket-connector-operator/crds/)");
}

#[test]
fn lint_is_clean_and_bad_values_are_rejected() {
    ok(
        &helm(&[
            "lint",
            "--strict",
            chart().to_str().unwrap(),
            "--kube-version",
            KUBE_VERSION,
        ]),
        "helm lint --strict",
    );
    let bad = std::fs::read_to_string(root().join("tests/helm/bad-values.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (index, document) in bad.split("\n---\n").enumerate() {
        let file = dir.path().join(format!("bad-{index}.yaml"));
        std::fs::write(&file, document).unwrap();
        let output = template(&[&file], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "values accepted:\n{document}");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_objects_validate_and_the_installed_rbac_suffices() {
    let plane = ControlPlane::start();
    let admin = plane.kubeconfig_file(&plane.kubeconfig_yaml(), "admin.kubeconfig");
    let client = plane.client().await;
    for ns in ["operator-system", "tenant-a", "tenant-b"] {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    // The CRDs the rendered objects need: ours, and stand-ins for the Prometheus Operator's.
    apply_file(&admin, "crds/socketconnectors.tbsc.io.yaml");
    apply_file(&admin, "tests/helm/monitoring-crds.yaml");
    ok(
        &kubectl(
            &admin,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
            ],
            None,
        ),
        "CRDs established",
    );

    // Every rendered object, for every values file, is accepted by the API server.
    let values_dir = root().join("tests/helm");
    let cases: Vec<Vec<PathBuf>> = vec![
        vec![],
        vec![values_dir.join("values-namespaced.yaml")],
        vec![values_dir.join("values-monitoring.yaml")],
        vec![values_dir.join("values-custom.yaml")],
        vec![
            values_dir.join("values-namespaced.yaml"),
            values_dir.join("values-monitoring.yaml"),
        ],
    ];
    for values in &cases {
        let refs: Vec<&Path> = values.iter().map(PathBuf::as_path).collect();
        let rendered = ok(&template(&refs, &[]), "helm template");
        let output = kubectl(
            &admin,
            &["apply", "--dry-run=server", "-f", "-"],
            Some(rendered.as_bytes()),
        );
        ok(
            &output,
            &format!("server-side dry run of the chart rendered with {values:?}"),
        );
    }
    // The example manifests, too.
    for example in ["tcp-string-device.yaml", "udp-binary-device.yaml"] {
        let path = root().join("examples/kubernetes").join(example);
        // Applied after `kubectl create secret`, a shipped Secret would overwrite the user's.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.lines().any(|line| line.trim() == "kind: Secret"),
            "{example} ships a Secret"
        );
        ok(
            &kubectl(
                &admin,
                &[
                    "apply",
                    "--dry-run=server",
                    "-n",
                    "tenant-a",
                    "-f",
                    path.to_str().unwrap(),
                ],
                None,
            ),
            example,
        );
    }

    // Install for tenant-a only, then act as the chart's ServiceAccount.
    install(
        &admin,
        &["--set", "watchNamespaces={tenant-a}", "--skip-crds"],
    );
    let token = ControlPlane::service_account_token(
        &client,
        "operator-system",
        "sco-socket-connector-operator",
    )
    .await;
    let operator_kubeconfig =
        plane.kubeconfig_file(&plane.kubeconfig_for_token(&token), "operator.kubeconfig");
    let as_operator = ControlPlane::client_from(&plane.kubeconfig_for_token(&token)).await;

    // What it must not do: read any Secret, in the watched namespace or elsewhere (the kubelet
    // reports a missing one).
    for namespace in ["tenant-a", "tenant-b"] {
        let secrets: Api<Secret> = Api::namespaced(as_operator.clone(), namespace);
        match secrets.get_opt("gateway").await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => {
                panic!("the operator's ServiceAccount reached Secrets in {namespace}: {other:?}")
            }
        }
        match secrets.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
            other => {
                panic!("the operator's ServiceAccount listed Secrets in {namespace}: {other:?}")
            }
        }
    }

    // What it must do: the operator binary, with only that token, reconciles to Ready.
    let operator_bin = e2e_tests::connector::workspace_binary(
        "socket-connector-operator",
        "socket-connector-operator",
    );
    let metrics_port = e2e_tests::free_port();
    let mut operator = Command::new(operator_bin)
        .args([
            "run",
            "--namespace",
            "tenant-a",
            "--leader-election",
            "--lease-namespace",
            "operator-system",
            "--identity",
            "sco-test",
        ])
        .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", &operator_kubeconfig)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the operator");
    let kubelet = fake_kubelet(client.clone(), "tenant-a");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "tenant-a");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "gateway-token"}, "stringData": {"accessToken": "t"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let connectors: Api<SocketConnector> = Api::namespaced(client.clone(), "tenant-a");
    let connector: SocketConnector = serde_json::from_value(json!({
        "apiVersion": "tbsc.io/v1alpha1", "kind": "SocketConnector", "metadata": {"name": "press"},
        "spec": socket_connector_operator::fixtures::persistent_queue_spec()
    }))
    .unwrap();
    let mut connector = connector;
    connector.spec.thingsboard.access_token = Some(SecretKeyRef {
        name: "gateway-token".into(),
        key: "accessToken".into(),
    });
    connectors
        .create(&PostParams::default(), &connector)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = connectors.get("press").await.unwrap();
        let ready = live.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready with the chart's RBAC: {:#?}",
            live.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The queue claim was made with the chart's RBAC and goes with the SocketConnector.
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), "tenant-a");
    let claim = claims.get("press-0-queue").await.unwrap();
    assert_eq!(
        claim.metadata.owner_references.unwrap()[0].kind,
        "SocketConnector"
    );
    let (status, body) = e2e_tests::http::get(
        format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        "/metrics",
    );
    assert_eq!(status, 200);
    let successes = e2e_tests::http::sample(
        &body,
        "socket_connector_operator_reconciliations_total{result=\"success\"}",
    );
    assert!(successes.is_some_and(|n| n >= 1.0), "{body}");
    let _ = operator.kill();
    let _ = operator.wait();
    kubelet.abort();
}
