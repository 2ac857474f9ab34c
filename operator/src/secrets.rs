//! With `--watch-secrets` (chart value `watchSecrets`), the operator watches the metadata of the
//! Secrets a connector's pods mount, so that a Secret created or rotated is acted on within
//! seconds rather than at the kubelet's pace:
//! - a pod that waits because the kubelet could not mount a Secret (a `FailedMount` Event naming
//!   it) is deleted once that Secret has been written since; its ReplicaSet starts a new pod,
//!   which mounts at once, where the waiting pod would wait out the kubelet's retry backoff (up
//!   to about 2 minutes);
//! - a running pod created before a Secret it mounts was last written gets the annotation
//!   [`VERSIONS_ANNOTATION`]: the kubelet syncs a pod whose annotations change, and a sync
//!   writes the Secret's current keys into the pod's volume, where it would wait for its periodic
//!   sync (`syncFrequency`, 1 minute by default). The connector reads the new files without a
//!   restart, so nothing rolls.
//!
//! Only metadata is watched (resource versions and write times); the Secrets' data never reaches
//! the operator, although the RBAC (list and watch on Secrets) would allow it. Without the flag
//! the operator has no access to Secrets at all. Here the rules, pure; the IO is in
//! [`crate::controller`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::crd::SocketConnectorSpec;
use crate::status::{event_time, WaitingPod, FAILED_MOUNT};

/// Annotation on a running connector pod: the Secrets' versions its volumes were last told of.
pub const VERSIONS_ANNOTATION: &str = "tbsc.io/secret-versions";

/// The names of the Secrets a connector's pods mount: ThingsBoard credentials, the CA and the
/// Secrets among `spec.pod.volumes`.
pub fn names(spec: &SocketConnectorSpec) -> BTreeSet<String> {
    let tb = &spec.thingsboard;
    let mut names: BTreeSet<String> = tb
        .access_token
        .iter()
        .chain(&tb.additional_access_tokens)
        .map(|token| token.name.clone())
        .collect();
    names.extend(
        tb.username_password
            .iter()
            .map(|up| up.password.name.clone()),
    );
    names.extend(
        tb.client_certificate
            .iter()
            .map(|cert| cert.secret_name.clone()),
    );
    names.extend(
        tb.tls
            .iter()
            .filter_map(|tls| tls.ca.as_ref()?.secret.as_ref())
            .map(|ca| ca.name.clone()),
    );
    for volume in spec.pod.iter().flat_map(|pod| &pod.volumes) {
        names.extend(
            volume
                .secret
                .iter()
                .filter_map(|secret| secret.secret_name.clone()),
        );
        let projected = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        names.extend(projected.filter_map(|source| Some(source.secret.as_ref()?.name.clone())));
    }
    names.retain(|name| !name.is_empty());
    names
}

/// What the operator knows of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSeen {
    pub resource_version: String,
    /// When it was last written: the newest time in its managed fields, else its creation.
    pub written_at: Option<Timestamp>,
}

impl SecretSeen {
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        let written = meta
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|entry| entry.time.as_ref().map(|t| t.0));
        Self {
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            written_at: written
                .chain(meta.creation_timestamp.as_ref().map(|t| t.0))
                .max(),
        }
    }
}

/// The mounted Secrets that exist, by name.
pub type SecretsSeen = BTreeMap<String, SecretSeen>;

/// The value of [`VERSIONS_ANNOTATION`]: `name=resourceVersion` of each existing Secret, sorted.
pub fn versions(seen: &SecretsSeen) -> String {
    let parts: Vec<String> = seen
        .iter()
        .map(|(name, secret)| format!("{name}={}", secret.resource_version))
        .collect();
    parts.join(",")
}

/// A running connector pod, as far as its Secrets go.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningPod {
    pub name: String,
    pub created: Option<Timestamp>,
    /// Its [`VERSIONS_ANNOTATION`].
    pub versions: Option<String>,
}

/// The running pods whose volumes may hold an older version of a Secret than the current one:
/// told of the current versions already, or created after every write, they need nothing (so
/// steady state writes nothing).
pub fn pods_to_refresh<'a>(pods: &'a [RunningPod], seen: &SecretsSeen) -> Vec<&'a str> {
    let current = versions(seen);
    let newest_write = seen.values().filter_map(|s| s.written_at).max();
    pods.iter()
        .filter(|pod| match &pod.versions {
            Some(told) => *told != current,
            None => match (pod.created, newest_write) {
                (_, None) => false,
                (Some(created), Some(written)) => written >= created,
                (None, Some(_)) => true,
            },
        })
        .map(|pod| pod.name.as_str())
        .collect()
}

/// The waiting pods to delete: the kubelet's latest `FailedMount` about the pod names mounted
/// Secrets (`names`), all of which exist now, and one of which was written at or after that
/// failure (a Secret created, or given its missing key). A pod waiting on a Secret still absent
/// is left to wait.
pub fn pods_to_restart<'a>(
    waiting: &'a [WaitingPod],
    events: &[Event],
    names: &BTreeSet<String>,
    seen: &SecretsSeen,
) -> Vec<&'a WaitingPod> {
    waiting
        .iter()
        .filter(|pod| {
            let Some((failed_at, message)) = latest_failed_mount(&pod.uid, events) else {
                return false;
            };
            let named: BTreeSet<&str> = message
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
                .filter(|word| names.contains(*word))
                .collect();
            !named.is_empty()
                && named.iter().all(|name| seen.contains_key(*name))
                && named.iter().any(|name| {
                    seen[*name]
                        .written_at
                        .is_some_and(|written| written >= failed_at)
                })
        })
        .collect()
}

fn latest_failed_mount<'a>(uid: &str, events: &'a [Event]) -> Option<(Timestamp, &'a str)> {
    events
        .iter()
        .filter(|event| event.reason.as_deref() == Some(FAILED_MOUNT))
        .filter(|event| event.involved_object.uid.as_deref() == Some(uid))
        .filter_map(|event| {
            Some((
                event_time(event)?,
                event.message.as_deref().unwrap_or_default(),
            ))
        })
        .max_by_key(|(when, _)| *when)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn seen(entries: &[(&str, &str, i64)]) -> SecretsSeen {
        entries
            .iter()
            .map(|(name, version, written)| {
                let secret = SecretSeen {
                    resource_version: (*version).to_owned(),
                    written_at: Some(at(*written)),
                };
                ((*name).to_owned(), secret)
            })
            .collect()
    }

    fn failed_mount(uid: &str, second: i64, message: &str) -> Event {
        let mut event: Event = serde_json::from_value(json!({
            "metadata": {"name": format!("{uid}.{second}")},
            "involvedObject": {"kind": "Pod", "uid": uid},
            "reason": FAILED_MOUNT,
            "message": message,
        }))
        .unwrap();
        event.last_timestamp = Some(Time(at(second)));
        event
    }

    fn waiting(name: &str) -> WaitingPod {
        WaitingPod {
            name: name.to_owned(),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn names_cover_credentials_ca_and_pod_volumes() {
        let mut spec = fixtures::tcp_spec();
        spec.thingsboard = serde_json::from_value(json!({
            "host": "tb", "accessToken": {"name": "token-a"},
            "additionalAccessTokens": [{"name": "token-b"}],
            "tls": {"ca": {"secret": {"name": "tb-ca", "key": "ca.crt"}}}
        }))
        .unwrap();
        spec.pod = serde_json::from_value(json!({"volumes": [
            {"name": "device-tls", "secret": {"secretName": "device-tls"}},
            {"name": "both", "projected": {"sources": [
                {"secret": {"name": "projected"}}, {"configMap": {"name": "not-a-secret"}}]}},
            {"name": "scratch", "emptyDir": {}}]}))
        .unwrap();
        let expected = ["device-tls", "projected", "tb-ca", "token-a", "token-b"];
        assert_eq!(names(&spec), expected.map(str::to_owned).into());
        // The CA from a ConfigMap is no Secret.
        let x509 = fixtures::x509_spec();
        assert_eq!(names(&x509), ["line-1-gateway-cert".to_owned()].into());
    }

    #[test]
    fn written_at_is_the_newest_managed_field_time() {
        let meta: ObjectMeta = serde_json::from_value(json!({
            "name": "gateway", "resourceVersion": "42",
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "managedFields": [
                {"manager": "kubectl-create", "operation": "Update", "time": "2026-12-01T10:00:00Z"},
                {"manager": "kubectl-edit", "operation": "Update", "time": "2026-12-01T11:30:00Z"}]
        }))
        .unwrap();
        let secret = SecretSeen::from_meta(&meta);
        assert_eq!(secret.resource_version, "42");
        assert_eq!(
            secret.written_at,
            Some("2026-12-01T11:30:00Z".parse().unwrap())
        );
        let bare: ObjectMeta =
            serde_json::from_value(json!({"creationTimestamp": "2026-12-01T10:00:00Z"})).unwrap();
        assert_eq!(
            SecretSeen::from_meta(&bare).written_at,
            Some("2026-12-01T10:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn a_pod_is_refreshed_only_when_a_secret_changed_after_it_was_told_or_created() {
        let now = seen(&[("gateway", "7", 100), ("tb-ca", "3", 50)]);
        let pod = |name: &str, created: i64, versions: Option<&str>| RunningPod {
            name: name.to_owned(),
            created: Some(at(created)),
            versions: versions.map(str::to_owned),
        };
        let pods = [
            pod("created-after-the-write", 120, None),
            pod("created-before-the-write", 90, None),
            pod("told-the-current-versions", 10, Some("gateway=7,tb-ca=3")),
            pod("told-older-versions", 10, Some("gateway=6,tb-ca=3")),
        ];
        assert_eq!(
            pods_to_refresh(&pods, &now),
            ["created-before-the-write", "told-older-versions"]
        );
        // A deleted Secret changes the versions too; no Secret at all asks nothing of new pods.
        let deleted = seen(&[("gateway", "7", 100)]);
        assert_eq!(
            pods_to_refresh(&pods[2..3], &deleted),
            ["told-the-current-versions"]
        );
        assert!(pods_to_refresh(&pods[..2], &SecretsSeen::new()).is_empty());
    }

    #[test]
    fn a_waiting_pod_restarts_once_every_secret_its_mount_failure_names_was_written_since() {
        let names: BTreeSet<String> = ["gateway", "tb-ca"].map(str::to_owned).into();
        let pods = [waiting("a"), waiting("b"), waiting("c"), waiting("d")];
        let events = [
            // Created after the failure: restart.
            failed_mount(
                "uid-a",
                10,
                r#"MountVolume.SetUp failed for volume "thingsboard" : secret "gateway" not found"#,
            ),
            // An older failure of the same pod does not count over the latest.
            failed_mount(
                "uid-b",
                5,
                r#"MountVolume.SetUp failed for volume "thingsboard" : secret "gateway" not found"#,
            ),
            failed_mount(
                "uid-b",
                30,
                r#"MountVolume.SetUp failed for volume "thingsboard" : secret "gateway" not found"#,
            ),
            // Names a Secret that is still missing.
            failed_mount(
                "uid-c",
                10,
                r#"MountVolume.SetUp failed for volume "thingsboard" : [secret "gateway" not found, secret "tb-ca" not found]"#,
            ),
            // Not about a Secret of this connector.
            failed_mount(
                "uid-d",
                10,
                r#"MountVolume.SetUp failed for volume "queue" : hostPath type check failed"#,
            ),
        ];
        let restarted = |seen: &SecretsSeen| -> Vec<String> {
            pods_to_restart(&pods, &events, &names, seen)
                .into_iter()
                .map(|pod| pod.name.clone())
                .collect()
        };
        assert_eq!(restarted(&seen(&[("gateway", "1", 20)])), ["a"]);
        assert_eq!(
            restarted(&seen(&[("gateway", "1", 30), ("tb-ca", "1", 40)])),
            ["a", "b", "c"]
        );
        // A key added to an existing Secret: the kubelet's words name it as namespace/name.
        let key = [failed_mount(
            "uid-a",
            10,
            "MountVolume.SetUp failed for volume \"thingsboard\" : couldn't find key token in Secret plant/gateway",
        )];
        assert_eq!(
            pods_to_restart(&pods[..1], &key, &names, &seen(&[("gateway", "2", 9)])).len(),
            0
        );
        assert_eq!(
            pods_to_restart(&pods[..1], &key, &names, &seen(&[("gateway", "2", 11)])).len(),
            1
        );
    }
}
