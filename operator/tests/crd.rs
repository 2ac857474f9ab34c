//! The committed CRD (`crds/`) is exactly what the code generates.

#[test]
fn committed_crd_matches_the_code() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/socketconnectors.tbsc.io.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("crds/socketconnectors.tbsc.io.yaml");
    let generated = socket_connector_operator::crd::crd_yaml();
    assert!(
        committed == generated,
        "crds/socketconnectors.tbsc.io.yaml is stale: run `cargo run -p socket-connector-operator -- crd > crds/socketconnectors.tbsc.io.yaml`"
    );
}
