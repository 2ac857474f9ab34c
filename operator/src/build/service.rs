//! The Service in front of the connector pods: the device port, and for a cluster-internal
//! Service the metrics port. A NodePort or LoadBalancer Service does not expose the metrics port
//! (Prometheus scrapes the pods), and keeps the devices' addresses (`Local`) by default so that
//! their address filters match.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as CoreServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, metadata, MANAGED_BY_LABEL};
use crate::crd::SocketConnector;
use crate::validate::Plan;

pub fn service(sc: &SocketConnector, plan: &Plan) -> Service {
    let settings = sc.spec.service.clone().unwrap_or_default();
    let mut selector = labels(sc);
    selector.remove(MANAGED_BY_LABEL);
    let mut metadata = metadata(sc, sc.name_any(), &[]);
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    let type_ = settings.type_.unwrap_or_else(|| "ClusterIP".to_owned());
    let external = type_ != "ClusterIP";
    let mut ports = vec![ServicePort {
        name: Some("device".to_owned()),
        port: i32::from(plan.port),
        target_port: Some(IntOrString::String("device".to_owned())),
        protocol: Some(plan.protocol.to_owned()),
        node_port: settings.node_port.filter(|_| external),
        ..ServicePort::default()
    }];
    if !external {
        ports.push(ServicePort {
            name: Some("metrics".to_owned()),
            port: plan.metrics_port,
            target_port: Some(IntOrString::String("metrics".to_owned())),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        });
    }
    let several_pods = plan.identities.len() > 1;
    let load_balancer = type_ == "LoadBalancer";
    Service {
        metadata,
        spec: Some(CoreServiceSpec {
            type_: Some(type_.clone()),
            selector: Some(selector),
            ports: Some(ports),
            external_traffic_policy: external.then(|| {
                settings
                    .external_traffic_policy
                    .clone()
                    .unwrap_or_else(|| "Local".to_owned())
            }),
            session_affinity: settings
                .session_affinity
                .clone()
                .or_else(|| several_pods.then(|| "ClientIP".to_owned())),
            load_balancer_source_ranges: (load_balancer
                && !settings.load_balancer_source_ranges.is_empty())
            .then(|| settings.load_balancer_source_ranges.clone()),
            load_balancer_class: settings
                .load_balancer_class
                .clone()
                .filter(|_| load_balancer),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
    }
}
