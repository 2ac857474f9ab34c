//! Golden files: each fixture's rendered children, as reviewers read them.
//! `UPDATE_GOLDEN=1 cargo test -p socket-connector-operator` rewrites them.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

use crate::crd::{SocketConnector, SocketConnectorSpec};
use crate::fixtures;
use crate::validate::validate;

fn resource(name: &str, spec: SocketConnectorSpec) -> SocketConnector {
    let mut sc = SocketConnector::new(name, spec);
    sc.metadata.namespace = Some("plant".to_owned());
    sc.metadata.uid = Some("00000000-0000-0000-0000-000000000001".to_owned());
    sc
}

fn render(sc: &SocketConnector) -> String {
    let plan = validate(&sc.spec, "plant", &sc.name_any()).expect("valid fixture");
    children(sc, &plan, &Defaults::default())
        .iter()
        .map(|child| serde_yaml::to_string(&child.to_apply()).expect("yaml"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn golden(name: &str, rendered: &str) {
    let path = format!("{}/tests/golden/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, rendered).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with UPDATE_GOLDEN=1 to create it)"));
    assert!(
        expected == rendered,
        "{path} differs from the rendered children; review and run with UPDATE_GOLDEN=1:\n{rendered}"
    );
}

#[test]
fn tcp_connector() {
    golden("tcp", &render(&resource("line-1", fixtures::tcp_spec())));
}

#[test]
fn udp_connector_with_two_identities() {
    golden(
        "udp-replicated",
        &render(&resource("meters", fixtures::udp_replicated_spec())),
    );
}

#[test]
fn connector_with_a_persistent_queue() {
    golden(
        "persistent-queue",
        &render(&resource("line-1", fixtures::persistent_queue_spec())),
    );
}

#[test]
fn connector_with_a_client_certificate() {
    golden("x509", &render(&resource("line-1", fixtures::x509_spec())));
}

/// `managedFields` as the apiserver keeps them: one manager owns `spec.connector`, the operator
/// owns `status` and changed later.
fn managed_fields(connector_owner_time: &str, status_time: &str) -> Vec<ManagedFieldsEntry> {
    let entry = |manager: &str, time: &str, fields: serde_json::Value| ManagedFieldsEntry {
        manager: Some(manager.to_owned()),
        operation: Some("Update".to_owned()),
        time: Some(Time(time.parse().expect("time"))),
        fields_v1: Some(FieldsV1(fields)),
        ..ManagedFieldsEntry::default()
    };
    vec![
        entry(
            "kubectl-client-side-apply",
            connector_owner_time,
            serde_json::json!({"f:spec": {"f:connector": {}, "f:thingsboard": {}}}),
        ),
        entry(
            "socket-connector-operator",
            status_time,
            serde_json::json!({"f:status": {"f:conditions": {}}}),
        ),
    ]
}

#[test]
fn connector_with_pod_and_service_settings() {
    golden(
        "pod-settings",
        &render(&resource("line-1", fixtures::pod_settings_spec())),
    );
}

#[test]
fn connector_with_remote_configuration() {
    let mut spec = fixtures::tcp_spec();
    spec.thingsboard.remote_configuration = Some(true);
    let mut sc = resource("line-1", spec);
    sc.metadata.managed_fields = Some(managed_fields(
        "2026-11-30T10:00:00Z",
        "2026-12-01T08:00:00Z",
    ));
    golden("remote-configuration", &render(&sc));
}

#[test]
fn connector_with_a_network_policy() {
    let mut spec = fixtures::udp_replicated_spec();
    spec.network_policy = Some(crate::crd::NetworkPolicySpec {
        thingsboard_cidrs: vec!["192.0.2.10/32".to_owned()],
        device_cidrs: vec!["10.0.0.0/23".to_owned(), "fd00:10::/64".to_owned()],
    });
    golden("network-policy", &render(&resource("meters", spec)));
    // Without device networks: devices from anywhere, nothing out but ThingsBoard and DNS.
    let mut open = fixtures::tcp_spec();
    open.network_policy = Some(crate::crd::NetworkPolicySpec::default());
    let sc = resource("line-1", open);
    let plan = crate::validate::validate(&sc.spec, "ns", "line-1").expect("valid");
    let policy = super::network_policy(&sc, &plan).expect("a policy");
    let spec = policy.spec.expect("spec");
    let ingress = spec.ingress.expect("ingress");
    assert_eq!(ingress[0].from, None);
    assert_eq!(spec.egress.expect("egress").len(), 2);
    assert!(super::network_policy(&resource("line-1", fixtures::tcp_spec()), &plan).is_none());
}

#[test]
fn network_policy_cidrs_must_parse() {
    for bad in ["10.0.0.0", "10.0.0.0/33", "plant-net/24", "fd00::/129"] {
        let mut spec = fixtures::tcp_spec();
        spec.network_policy = Some(crate::crd::NetworkPolicySpec {
            thingsboard_cidrs: vec![],
            device_cidrs: vec!["10.1.0.0/16".to_owned(), bad.to_owned()],
        });
        let error = crate::validate::validate(&spec, "ns", "n").expect_err(bad);
        assert_eq!(
            error.failure(),
            crate::failure::Failure::InvalidNetworkPolicy
        );
        assert!(
            error
                .to_string()
                .starts_with("spec.networkPolicy.deviceCIDRs[1]: "),
            "{error}"
        );
    }
}

#[test]
fn the_connector_changed_when_its_owner_last_changed_it() {
    let mut sc = resource("line-1", fixtures::tcp_spec());
    sc.metadata.creation_timestamp = Some(Time("2026-11-01T00:00:00Z".parse().expect("time")));
    assert_eq!(
        config_map::connector_changed_at_ms(&sc),
        1_793_491_200_000,
        "the creation time without managedFields"
    );
    sc.metadata.managed_fields = Some(managed_fields(
        "2026-11-30T10:00:00Z",
        "2026-12-01T08:00:00Z",
    ));
    assert_eq!(config_map::connector_changed_at_ms(&sc), 1_796_032_800_000);
}

#[test]
fn queue_settings_the_connector_refuses_are_rejected() {
    let mut spec = fixtures::tcp_spec();
    spec.queue = Some(crate::crd::QueueSpec {
        fsync: Some("sometimes".to_owned()),
        ..Default::default()
    });
    let error = crate::validate::validate(&spec, "ns", "n").expect_err("invalid fsync");
    assert_eq!(error.failure(), crate::failure::Failure::InvalidQueue);
    assert!(error.to_string().starts_with("spec.queue.fsync"), "{error}");
}

#[test]
fn only_changes_the_connector_cannot_reload_restart_the_pods() {
    let base = fixtures::tcp_spec();
    let plan = |spec: &crate::crd::SocketConnectorSpec| {
        crate::validate::validate(spec, "ns", "n").expect("valid")
    };
    let mut devices_changed = base.clone();
    devices_changed.connector.0["devices"][0]["deviceName"] = "Other".into();
    // The connector applies its log settings live too.
    devices_changed.connector.0["logLevel"] = "DEBUG".into();
    devices_changed.connector.0["enableRemoteLogging"] = true.into();
    let mut socket_changed = base.clone();
    socket_changed.connector.0["socket"]["bufferSize"] = 4096.into();
    assert_ne!(plan(&base).config_hash, plan(&devices_changed).config_hash);
    assert_eq!(
        plan(&base).restart_hash,
        plan(&devices_changed).restart_hash
    );
    assert_ne!(plan(&base).restart_hash, plan(&socket_changed).restart_hash);
    assert_ne!(
        plan(&base).restart_hash,
        plan(&fixtures::persistent_queue_spec()).restart_hash
    );
}

#[test]
fn paused_connector() {
    golden(
        "paused",
        &render(&resource("line-1", fixtures::paused_spec())),
    );
}

#[test]
fn children_are_owned_labelled_and_restricted() {
    let sc = resource("meters", fixtures::udp_replicated_spec());
    let plan = validate(&sc.spec, "plant", "meters").unwrap();
    let deployments = deployments(&sc, &plan, &Defaults::default());
    assert_eq!(deployments.len(), 2);
    for (index, deployment) in deployments.iter().enumerate() {
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("SocketConnector", Some(true))
        );
        let pod = crate::fixtures::pod_spec(deployment);
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(container.env, None, "no credentials in the environment");
        let projected = pod.volumes.as_ref().unwrap()[1].projected.as_ref().unwrap();
        let token = projected.sources.as_ref().unwrap()[0]
            .secret
            .as_ref()
            .unwrap();
        let item = &token.items.as_ref().unwrap()[0];
        assert_eq!(
            (item.key.as_str(), item.path.as_str()),
            (["gateway-a", "gateway-b"][index], "access-token")
        );
        let args = container.args.as_ref().unwrap();
        let token_file = &args[args.iter().position(|a| a == "--token-file").unwrap() + 1];
        assert_eq!(token_file, "/var/run/secrets/thingsboard/access-token");
        let client_id = &args[args.iter().position(|a| a == "--client-id").unwrap() + 1];
        assert_eq!(client_id, &format!("plant.meters-{index}"));
    }
    let service = service(&sc, &plan);
    let ports = service.spec.unwrap().ports.unwrap();
    assert_eq!(
        (
            ports[0].protocol.as_deref(),
            ports[0].port,
            ports[0].node_port
        ),
        (Some("UDP"), 5005, Some(30505))
    );
}
