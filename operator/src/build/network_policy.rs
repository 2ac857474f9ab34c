//! The NetworkPolicy of the connector pods (`spec.networkPolicy`): devices in, ThingsBoard, DNS
//! and the device networks out, and nothing else, so that a connector cannot be used to reach
//! the rest of the cluster.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec as CoreNetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, metadata};
use crate::crd::SocketConnector;
use crate::validate::Plan;

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.to_owned()),
        ..NetworkPolicyPort::default()
    }
}

/// Peers for these CIDRs; none means any peer.
fn blocks(cidrs: &[String]) -> Option<Vec<NetworkPolicyPeer>> {
    (!cidrs.is_empty()).then(|| {
        cidrs
            .iter()
            .map(|cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.clone(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            })
            .collect()
    })
}

pub fn network_policy(sc: &SocketConnector, plan: &Plan) -> Option<NetworkPolicy> {
    let policy = sc.spec.network_policy.as_ref()?;
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: blocks(&policy.device_cidrs),
            ports: Some(vec![port(i32::from(plan.port), plan.protocol)]),
        },
        // Prometheus and the operator (its ThingsBoardConnected condition) read this port.
        NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![port(plan.metrics_port, "TCP")]),
        },
    ];
    ingress.dedup();
    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: blocks(&policy.thingsboard_cidrs),
            ports: Some(vec![port(plan.thingsboard_port, "TCP")]),
        },
        NetworkPolicyEgressRule {
            to: None,
            ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
        },
    ];
    if let Some(devices) = blocks(&policy.device_cidrs) {
        egress.push(NetworkPolicyEgressRule {
            to: Some(devices),
            ports: None,
        });
    }
    Some(NetworkPolicy {
        metadata: metadata(sc, sc.name_any(), &[]),
        spec: Some(CoreNetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels(sc)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    })
}
