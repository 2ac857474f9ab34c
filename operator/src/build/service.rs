//! The Service in front of the connector pods: the device port and the metrics port.

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
    Service {
        metadata,
        spec: Some(CoreServiceSpec {
            type_: Some(type_.clone()),
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("device".to_owned()),
                    port: i32::from(plan.port),
                    target_port: Some(IntOrString::String("device".to_owned())),
                    protocol: Some(plan.protocol.to_owned()),
                    node_port: settings.node_port.filter(|_| type_ != "ClusterIP"),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".to_owned()),
                    port: plan.metrics_port,
                    target_port: Some(IntOrString::String("metrics".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
    }
}
