//! What the kubelet says about connector pods that do not start. The operator has no access to
//! Secrets (least privilege): a Secret, ConfigMap or key that a pod mounts and that does not exist
//! is reported by the kubelet, as a `FailedMount` Event on the pod, and read from there.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;

use crate::failure::Failure;

/// The Event reason the kubelet gives when it cannot set up a pod's volume.
pub const FAILED_MOUNT: &str = "FailedMount";

/// A connector pod that has not started its containers.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingPod {
    pub name: String,
    pub uid: String,
}

/// When an Event last happened: its last timestamp (the kubelet's aggregated Events), else its
/// event time, else its creation.
pub fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The kubelet's latest `FailedMount` about one of `waiting`, as the failure it is and a message
/// naming the pod: `SecretMissing` when a Secret, ConfigMap or key is missing (the message names
/// it), `VolumeMountFailed` for any other volume (a claim, a host path).
pub fn mount_failure(waiting: &[WaitingPod], events: &[Event]) -> Option<(Failure, String)> {
    let latest = events
        .iter()
        .filter(|event| event.reason.as_deref() == Some(FAILED_MOUNT))
        .filter_map(|event| {
            let uid = event.involved_object.uid.as_deref()?;
            let pod = waiting.iter().find(|pod| pod.uid == uid)?;
            Some((
                event_time(event),
                pod,
                event.message.as_deref().unwrap_or_default(),
            ))
        })
        .max_by_key(|(when, _, _)| *when)?;
    let (_, pod, message) = latest;
    let lower = message.to_ascii_lowercase();
    // The kubelet's watching manager names the resource in the singular, its caching one (and the
    // API) in the plural.
    let missing = [
        "secret \"",
        "secrets \"",
        "configmap \"",
        "configmaps \"",
        "non-existent secret key",
        "non-existent config key",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    let failure = if missing {
        Failure::SecretMissing
    } else {
        Failure::VolumeMountFailed
    };
    Some((failure, format!("pod {}: {message}", pod.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn event(uid: &str, reason: &str, second: i64, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{uid}.{second}")},
            "involvedObject": {"kind": "Pod", "uid": uid},
            "reason": reason,
            "message": message,
        }))
        .map(|mut event: Event| {
            event.last_timestamp = Some(Time(Timestamp::from_second(second).unwrap()));
            event
        })
        .unwrap()
    }

    fn waiting(name: &str, uid: &str) -> WaitingPod {
        WaitingPod {
            name: name.to_owned(),
            uid: uid.to_owned(),
        }
    }

    #[test]
    fn the_latest_failed_mount_of_a_waiting_pod_is_reported() {
        let events = [
            event("u1", FAILED_MOUNT, 10, "MountVolume.SetUp failed for volume \"thingsboard\" : secret \"old\" not found"),
            event("u1", FAILED_MOUNT, 20, "MountVolume.SetUp failed for volume \"thingsboard\" : secret \"gateway\" not found"),
            event("u1", "Scheduled", 30, "Successfully assigned plant/line-1-0-abc to node"),
            // A pod that started since (or another pod): not waiting, not reported.
            event("u9", FAILED_MOUNT, 40, "MountVolume.SetUp failed for volume \"queue\" : hostPath type check failed"),
        ];
        assert_eq!(
            mount_failure(&[waiting("line-1-0-abc", "u1")], &events),
            Some((
                Failure::SecretMissing,
                "pod line-1-0-abc: MountVolume.SetUp failed for volume \"thingsboard\" : secret \"gateway\" not found".to_owned()
            ))
        );
        assert_eq!(
            mount_failure(&[waiting("line-1-0-xyz", "u2")], &events),
            None
        );
        assert_eq!(mount_failure(&[], &events), None);
    }

    #[test]
    fn a_missing_key_is_a_missing_secret_and_other_volumes_are_not() {
        let key = event("u1", FAILED_MOUNT, 1, "MountVolume.SetUp failed for volume \"thingsboard\" : references non-existent secret key: token");
        let host_path = event("u2", FAILED_MOUNT, 1, "MountVolume.SetUp failed for volume \"queue\" : hostPath type check failed: /data is not a directory");
        let pods = [waiting("a", "u1"), waiting("b", "u2")];
        assert_eq!(
            mount_failure(&pods, &[key]).map(|f| f.0),
            Some(Failure::SecretMissing)
        );
        assert_eq!(
            mount_failure(&pods, &[host_path]).map(|f| f.0),
            Some(Failure::VolumeMountFailed)
        );
    }
}
