//! One PersistentVolumeClaim per gateway identity when `spec.queue.persistence` is set.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{deployment_name, metadata, REPLICA_LABEL};
use crate::crd::SocketConnector;
use crate::validate::{Identity, Plan};

pub fn queue_claim_name(sc: &SocketConnector, identity: &Identity) -> String {
    format!("{}-queue", deployment_name(sc, identity))
}

/// One claim per identity when `spec.queue.persistence` is set: the queue of a gateway identity
/// survives its pod.
pub fn queue_claims(sc: &SocketConnector, plan: &Plan) -> Vec<PersistentVolumeClaim> {
    let Some(persistence) = sc.spec.queue.as_ref().and_then(|q| q.persistence.as_ref()) else {
        return Vec::new();
    };
    plan.identities
        .iter()
        .map(|identity| PersistentVolumeClaim {
            metadata: metadata(
                sc,
                queue_claim_name(sc, identity),
                &[(REPLICA_LABEL, identity.index.to_string())],
            ),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(persistence.size.clone().unwrap_or_else(|| "2Gi".to_owned())),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        })
        .collect()
}
