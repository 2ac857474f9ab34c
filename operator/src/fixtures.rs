//! Example specs shared by unit tests, golden files and the end-to-end tests.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use crate::crd::SocketConnectorSpec;

/// A TCP connector with one string device, as a user would copy it from ThingsBoard.
pub fn tcp_spec() -> SocketConnectorSpec {
    serde_json::from_value(json!({
        "connector": {
            "name": "TCP Connector",
            "logLevel": "INFO",
            "socket": {"type": "TCP", "address": "127.0.0.1", "port": 50000, "bufferSize": 1024},
            "devices": [{
                "address": "*:*",
                "deviceName": "Device Example",
                "deviceType": "default",
                "telemetry": [{"key": "temp", "byteFrom": 0, "byteTo": -1}],
                "attributes": [{"key": "name", "byteFrom": 0, "byteTo": -1}]
            }]
        },
        "thingsboard": {"host": "thingsboard.thingsboard.svc", "accessToken": {"name": "gateway-token"}}
    }))
    .expect("fixture spec")
}

/// A UDP connector with two replicas (two gateway identities), a NodePort Service and limits.
pub fn udp_replicated_spec() -> SocketConnectorSpec {
    serde_json::from_value(json!({
        "connector": {
            "name": "UDP Meters",
            "socket": {"type": "UDP", "address": "0.0.0.0", "port": 5005},
            "devices": [
                {"address": "10.0.0.*:*", "deviceName": "Meter A", "encoding": "hex",
                 "telemetry": [{"key": "raw"}]},
                {"address": "10.0.1.*:*", "deviceName": "Meter B", "telemetry": [{"key": "raw"}]}
            ]
        },
        "thingsboard": {
            "host": "tb.example.com", "port": 1884, "qos": 0,
            "accessToken": {"name": "meters", "key": "gateway-a"},
            "additionalAccessTokens": [{"name": "meters", "key": "gateway-b"}],
            "reportStrategy": {"type": "ON_CHANGE"}
        },
        "replicas": 2,
        "image": "registry.example.com/socket-connector:1.2.3",
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "queue": {"maxBytes": 8388608},
        "service": {"type": "NodePort", "nodePort": 30505, "annotations": {"example.com/team": "meters"}},
        "metricsPort": 9200
    }))
    .expect("fixture spec")
}

/// A paused connector: configuration and Service stay, no pods run.
pub fn paused_spec() -> SocketConnectorSpec {
    let mut spec = tcp_spec();
    spec.paused = Some(true);
    spec
}

/// The TCP connector with a persistent queue that drops the oldest records when full.
pub fn persistent_queue_spec() -> SocketConnectorSpec {
    let mut spec = tcp_spec();
    spec.queue = Some(crate::crd::QueueSpec {
        max_bytes: Some(512 << 20),
        full_policy: Some("drop-oldest".to_owned()),
        fsync: Some("always".to_owned()),
        persistence: Some(crate::crd::PersistenceSpec {
            size: Some("1Gi".to_owned()),
            storage_class_name: Some("fast-ssd".to_owned()),
        }),
    });
    spec
}

/// The TCP connector authenticating with an X.509 client certificate (a cert-manager
/// `kubernetes.io/tls` Secret) against a ThingsBoard whose CA is in a ConfigMap.
pub fn x509_spec() -> SocketConnectorSpec {
    let mut spec = tcp_spec();
    spec.thingsboard = serde_json::from_value(json!({
        "host": "thingsboard.thingsboard.svc",
        "clientCertificate": {"secretName": "line-1-gateway-cert"},
        "tls": {"ca": {"configMap": {"name": "thingsboard-ca", "key": "ca.crt"}}}
    }))
    .expect("fixture thingsboard spec");
    spec
}

/// A TLS device listener on a LoadBalancer for one site's address range, its certificate from a
/// Secret volume, pods pinned to edge nodes with a Multus network annotation.
pub fn pod_settings_spec() -> SocketConnectorSpec {
    let mut spec = tcp_spec();
    spec.connector.0["socket"]["tls"] = json!({
        "certFile": "/etc/device-tls/tls.crt",
        "keyFile": "/etc/device-tls/tls.key"
    });
    let settings = json!({
        "service": {
            "type": "LoadBalancer",
            "loadBalancerSourceRanges": ["198.18.0.0/24"],
            "loadBalancerClass": "example.com/edge-lb"
        },
        "pod": {
            "labels": {"site": "plant-7"},
            "annotations": {"k8s.v1.cni.cncf.io/networks": "device-net"},
            "nodeSelector": {"node-role.example.com/edge": "true"},
            "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["plant-7"]}
                ]}]}}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "line-1"}}}],
            "priorityClassName": "edge-critical",
            "imagePullSecrets": [{"name": "registry"}],
            "volumes": [{"name": "device-tls", "secret": {"secretName": "line-1-device-tls"}}],
            "volumeMounts": [{"name": "device-tls", "mountPath": "/etc/device-tls", "readOnly": true}]
        }
    });
    let mut value = serde_json::to_value(&spec).expect("spec");
    if let (Some(object), Some(extra)) = (value.as_object_mut(), settings.as_object()) {
        object.extend(extra.clone());
    }
    serde_json::from_value(value).expect("fixture spec")
}

/// The pod spec of a Deployment the operator built (tests only: panics when it has none).
pub fn pod_spec(deployment: &Deployment) -> &PodSpec {
    let template = &deployment.spec.as_ref().expect("deployment spec").template;
    template.spec.as_ref().expect("pod spec")
}

/// The pod template's metadata of a Deployment the operator built (tests only).
pub fn pod_metadata(deployment: &Deployment) -> &ObjectMeta {
    let template = &deployment.spec.as_ref().expect("deployment spec").template;
    template.metadata.as_ref().expect("pod metadata")
}
