//! The Helm chart, rendered with the helm binary built for the tests (`tests/k8s/build-binaries.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::control_plane::bin_dir;
use crate::run;

/// The Kubernetes version the chart is rendered for (the test apiserver's).
pub const KUBE_VERSION: &str = "1.34.0";

/// The repository's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn chart() -> PathBuf {
    root().join("charts/socket-connector-operator")
}

pub fn helm(args: &[&str]) -> Output {
    run(Command::new(bin_dir().join("helm"))
        .args(args)
        .env("HELM_CACHE_HOME", std::env::temp_dir())
        .env("HELM_CONFIG_HOME", std::env::temp_dir()))
}

/// `helm install sco <chart> --namespace operator-system` into the cluster of `kubeconfig`, with
/// these extra arguments; panics with helm's output if it fails.
pub fn install(kubeconfig: &Path, extra: &[&str]) {
    release("install", kubeconfig, extra);
}

/// `helm upgrade sco <chart> --namespace operator-system --reuse-values` with these extra
/// arguments.
pub fn upgrade(kubeconfig: &Path, extra: &[&str]) {
    let mut args = vec!["--reuse-values"];
    args.extend_from_slice(extra);
    release("upgrade", kubeconfig, &args);
}

fn release(command: &str, kubeconfig: &Path, extra: &[&str]) {
    let chart = chart();
    let mut args = vec![
        command,
        "sco",
        chart.to_str().unwrap(),
        "--namespace",
        "operator-system",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    crate::ok(&helm(&args), &format!("helm {command}"));
}

/// `helm template sco <chart> --namespace operator-system` with these values files and arguments.
pub fn template(values: &[&Path], extra: &[&str]) -> Output {
    let chart = chart();
    let mut args = vec![
        "template",
        "sco",
        chart.to_str().unwrap(),
        "--namespace",
        "operator-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    let values: Vec<String> = values.iter().map(|v| v.display().to_string()).collect();
    for file in &values {
        args.push("--values");
        args.push(file);
    }
    args.extend_from_slice(extra);
    helm(&args)
}
