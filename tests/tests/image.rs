//! The Dockerfile cannot be built here (no Docker engine); what can be checked is that it builds
//! and copies exactly the workspace's binaries, and that the chart and the operator point at
//! the image and commands it provides.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// The names under `[[bin]]` of a Cargo.toml (just enough parsing for our manifests).
fn bins(manifest: &str) -> Vec<String> {
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bin) {
            bins.push(name.trim_matches('"').to_owned());
        }
    }
    bins
}

#[test]
fn dockerfile_ships_the_workspace_binaries() {
    let dockerfile = read("Dockerfile");
    let mut workspace_bins = bins(&read("connector/Cargo.toml"));
    workspace_bins.extend(bins(&read("operator/Cargo.toml")));
    assert_eq!(
        workspace_bins,
        [
            "socket-connector",
            "socket-simulate",
            "socket-connector-operator"
        ]
    );
    for bin in &workspace_bins {
        assert!(
            dockerfile.contains(&format!("--bin {bin}")),
            "Dockerfile does not build {bin}"
        );
        assert!(
            dockerfile.contains(&format!("/release/{bin} /usr/local/bin/{bin}")),
            "Dockerfile does not copy {bin}"
        );
    }
    let copies = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from=build"))
        .count();
    assert_eq!(
        copies,
        workspace_bins.len(),
        "the image holds exactly the workspace binaries"
    );
    assert!(dockerfile.contains("USER 65532:65532"), "non-root image");
}

#[test]
fn chart_and_operator_use_the_image_and_its_commands() {
    let values = read("charts/socket-connector-operator/values.yaml");
    let deployment = read("charts/socket-connector-operator/templates/deployment.yaml");
    let default_image = socket_connector_operator::build::Defaults::default().image;
    let repository = default_image.rsplit_once(':').unwrap().0;
    assert!(
        values.contains(&format!("repository: {repository}")),
        "chart image repository is not {repository}"
    );
    assert!(deployment.contains("command: [socket-connector-operator]"));
    let chart = read("charts/socket-connector-operator/Chart.yaml");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "appVersion must be the workspace version {version}"
    );
    assert!(default_image.ends_with(&format!(":{version}")));
}
