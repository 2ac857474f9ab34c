//! Status conditions (metav1.Condition shape), computed without IO from what reconcile observed.
//! A condition's `lastTransitionTime` changes only when its status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::SocketConnectorStatus;
use crate::failure::Failure;

mod kubelet;
mod remote;
mod thingsboard;

pub use kubelet::{event_time, mount_failure, WaitingPod, FAILED_MOUNT};
pub use remote::{configuration_condition, with_configuration_origin, CONFIGURED_IN_THINGSBOARD};

pub use thingsboard::{
    thingsboard_condition, with_thingsboard_link, PodLink, THINGSBOARD_CONNECTED,
};

impl Observation {
    /// The failure this observation reports, if it is one.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Self::Invalid { failure, .. } => Some(*failure),
            Self::MountFailed { failure, .. } => Some(*failure),
            Self::ApplyFailed { .. } => Some(Failure::ApplyFailed),
            Self::Applied { .. } => None,
        }
    }
}

/// What reconcile learned this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The spec (or the object) cannot be rolled out; nothing was applied.
    Invalid { failure: Failure, message: String },
    /// Children applied, but the kubelet cannot start the pods: a volume does not mount
    /// (`SecretMissing` for a missing Secret, ConfigMap or key, else `VolumeMountFailed`).
    MountFailed { failure: Failure, message: String },
    /// The API server refused a child (quota, admission, an immutable field, RBAC); the spec is
    /// valid, the children are partly applied.
    ApplyFailed { message: String },
    /// Children applied; `ready`/`desired` pods of the current config hash.
    Applied {
        desired: i32,
        ready: i32,
        updated: bool,
        paused: bool,
    },
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// The four conditions for an observation.
pub fn conditions(observation: &Observation, generation: Option<i64>) -> Vec<Condition> {
    let c = |t: &str, ok: bool, reason: &str, message: String| {
        condition(t, ok, reason, message, generation)
    };
    match observation {
        Observation::Invalid { failure, message } => {
            let reason = failure.reason();
            vec![
                c("Ready", false, reason, message.clone()),
                c(
                    "Progressing",
                    false,
                    reason,
                    "nothing is rolled out until the spec is fixed".to_owned(),
                ),
                c("Degraded", true, reason, message.clone()),
                c("ConfigValid", false, reason, message.clone()),
            ]
        }
        Observation::MountFailed { failure, message } => vec![
            c("Ready", false, failure.reason(), message.clone()),
            c(
                "Progressing",
                false,
                failure.reason(),
                "the kubelet retries the mount; the pods start once it succeeds".to_owned(),
            ),
            c("Degraded", true, failure.reason(), message.clone()),
            c(
                "ConfigValid",
                true,
                "Valid",
                "the connector configuration is valid".to_owned(),
            ),
        ],
        Observation::ApplyFailed { message } => vec![
            c(
                "Ready",
                false,
                Failure::ApplyFailed.reason(),
                message.clone(),
            ),
            c(
                "Progressing",
                false,
                Failure::ApplyFailed.reason(),
                "retrying every 30 s".to_owned(),
            ),
            c(
                "Degraded",
                true,
                Failure::ApplyFailed.reason(),
                message.clone(),
            ),
            c(
                "ConfigValid",
                true,
                "Valid",
                "the connector configuration is valid".to_owned(),
            ),
        ],
        Observation::Applied {
            desired,
            ready,
            updated,
            paused,
        } => {
            let valid = c(
                "ConfigValid",
                true,
                "Valid",
                "the connector configuration is valid".to_owned(),
            );
            if *paused {
                return vec![
                    c(
                        "Ready",
                        false,
                        "Paused",
                        "spec.paused is true: no connector pods run".to_owned(),
                    ),
                    c("Progressing", false, "Paused", "paused".to_owned()),
                    c("Degraded", false, "Paused", "paused on purpose".to_owned()),
                    valid,
                ];
            }
            let done = *updated && ready >= desired;
            let pods = format!("{ready}/{desired} connector pods ready");
            vec![
                c(
                    "Ready",
                    done,
                    if done { "Available" } else { "RollingOut" },
                    pods.clone(),
                ),
                c(
                    "Progressing",
                    !done,
                    if done {
                        "RolloutComplete"
                    } else {
                        "RollingOut"
                    },
                    pods.clone(),
                ),
                c("Degraded", false, "AsExpected", pods),
                valid,
            ]
        }
    }
}

/// Warnings listed in the ConfigValid message at most; the rest are counted.
const LISTED_WARNINGS: usize = 10;

/// A valid configuration with keys the connector ignores (or other warnings of its loader):
/// ConfigValid stays True, with reason `ValidWithWarnings` and the warnings, paths first.
pub fn with_config_warnings(conditions: &mut [Condition], warnings: &[String]) {
    if warnings.is_empty() {
        return;
    }
    let Some(valid) = conditions
        .iter_mut()
        .find(|c| c.type_ == "ConfigValid" && c.status == "True")
    else {
        return;
    };
    valid.reason = "ValidWithWarnings".to_owned();
    valid.message = config_warnings_note(warnings);
}

/// `valid; the connector warns: spec.connector.<path>: ...; ...` (bounded).
pub fn config_warnings_note(warnings: &[String]) -> String {
    let listed: Vec<String> = warnings
        .iter()
        .take(LISTED_WARNINGS)
        .map(|warning| format!("spec.connector.{warning}"))
        .collect();
    let mut note = format!("valid; the connector warns: {}", listed.join("; "));
    if warnings.len() > LISTED_WARNINGS {
        note.push_str(&format!("; and {} more", warnings.len() - LISTED_WARNINGS));
    }
    note
}

/// Keeps each condition's transition time when its status did not change, so an unchanged status
/// compares equal and is not written again.
pub fn carry_transition_times(new: &mut [Condition], old: &[Condition]) {
    for condition in new.iter_mut() {
        if let Some(previous) = old.iter().find(|o| o.type_ == condition.type_) {
            if previous.status == condition.status {
                condition.last_transition_time = previous.last_transition_time.clone();
            }
        }
    }
}

/// Pods are not watched: while the kubelet cannot mount a pod's volume the operator looks again,
/// every 2 s for the first 2 minutes of waiting (a Secret created right after its
/// SocketConnector), then every 15 s.
pub fn mount_poll_interval(status: Option<&SocketConnectorStatus>, now: Timestamp) -> Duration {
    let mount_failures = [
        Failure::SecretMissing.reason(),
        Failure::VolumeMountFailed.reason(),
    ];
    let waiting_since = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && mount_failures.contains(&c.reason.as_str())
            })
            .map(|c| c.last_transition_time.0)
    });
    let waited = waiting_since
        .and_then(|since| now.duration_since(since).try_into().ok())
        .unwrap_or(Duration::ZERO);
    if waited < SECRET_FAST_POLL_FOR {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(15)
    }
}

const SECRET_FAST_POLL_FOR: Duration = Duration::from_secs(120);

pub fn is_ready(status: Option<&SocketConnectorStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// What pod `name` answered on `/status` (`Ok`), or why it did not.
    pub(super) fn pod(name: &str, answer: Result<&str, &str>) -> PodLink {
        PodLink {
            pod: name.to_owned(),
            answer: answer.map(str::to_owned).map_err(str::to_owned),
        }
    }

    #[test]
    fn invalid_config_is_not_rolled_out() {
        let observation = Observation::Invalid {
            failure: Failure::InvalidConfig,
            message: "spec.connector.devices[0].deviceName: must not be empty".into(),
        };
        let conditions = conditions(&observation, Some(3));
        let valid = find(&conditions, "ConfigValid");
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "InvalidConfig")
        );
        assert!(valid.message.contains("devices[0].deviceName"));
        assert_eq!(valid.observed_generation, Some(3));
        assert_eq!(find(&conditions, "Ready").status, "False");
    }

    #[test]
    fn a_refused_child_degrades_a_valid_connector() {
        let observation = Observation::ApplyFailed {
            message: "PersistentVolumeClaim line-1-0-queue: exceeded quota".into(),
        };
        let conditions = conditions(&observation, Some(2));
        assert_eq!(find(&conditions, "Degraded").status, "True");
        assert_eq!(find(&conditions, "Degraded").reason, "ApplyFailed");
        assert!(find(&conditions, "Ready")
            .message
            .contains("exceeded quota"));
        assert_eq!(find(&conditions, "ConfigValid").status, "True");
    }

    #[test]
    fn ready_once_every_pod_of_the_current_config_is_ready() {
        let rolling = conditions(
            &Observation::Applied {
                desired: 2,
                ready: 1,
                updated: true,
                paused: false,
            },
            Some(1),
        );
        assert_eq!(find(&rolling, "Ready").status, "False");
        assert_eq!(find(&rolling, "Progressing").status, "True");
        let stale = conditions(
            &Observation::Applied {
                desired: 1,
                ready: 1,
                updated: false,
                paused: false,
            },
            Some(1),
        );
        assert_eq!(find(&stale, "Ready").status, "False");
        let done = conditions(
            &Observation::Applied {
                desired: 2,
                ready: 2,
                updated: true,
                paused: false,
            },
            Some(1),
        );
        assert_eq!(find(&done, "Ready").status, "True");
        assert_eq!(find(&done, "Ready").reason, "Available");
    }

    #[test]
    fn transition_times_survive_unchanged_statuses() {
        let observation = Observation::Applied {
            desired: 1,
            ready: 1,
            updated: true,
            paused: false,
        };
        let mut old = conditions(&observation, Some(1));
        for condition in &mut old {
            condition.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        let mut new = conditions(&observation, Some(1));
        carry_transition_times(&mut new, &old);
        assert_eq!(new, old);
        let mut flipped = conditions(
            &Observation::Applied {
                desired: 1,
                ready: 0,
                updated: true,
                paused: false,
            },
            Some(1),
        );
        carry_transition_times(&mut flipped, &old);
        assert_ne!(
            find(&flipped, "Ready").last_transition_time,
            find(&old, "Ready").last_transition_time
        );
        assert_eq!(
            find(&flipped, "ConfigValid").last_transition_time,
            find(&old, "ConfigValid").last_transition_time
        );
    }

    #[test]
    fn warnings_of_a_valid_config_are_named_on_config_valid() {
        let observation = Observation::Applied {
            desired: 1,
            ready: 1,
            updated: true,
            paused: false,
        };
        let mut conditions = conditions(&observation, Some(1));
        let warnings: Vec<String> = (0..12)
            .map(|i| format!("devices[{i}].accessToken: unknown key, ignored"))
            .collect();
        with_config_warnings(&mut conditions, &warnings);
        let valid = find(&conditions, "ConfigValid");
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("True", "ValidWithWarnings")
        );
        assert!(valid
            .message
            .starts_with("valid; the connector warns: spec.connector.devices[0].accessToken"));
        assert!(valid.message.ends_with("; and 2 more"), "{}", valid.message);
        let mut invalid = conditions_of_invalid();
        with_config_warnings(&mut invalid, &warnings);
        assert_eq!(find(&invalid, "ConfigValid").reason, "InvalidConfig");
    }

    pub(super) fn conditions_of_invalid() -> Vec<Condition> {
        conditions(
            &Observation::Invalid {
                failure: Failure::InvalidConfig,
                message: "bad".into(),
            },
            Some(1),
        )
    }

    #[test]
    fn a_missing_secret_is_looked_for_often_at_first() {
        let missing = Observation::MountFailed {
            failure: Failure::SecretMissing,
            message: "pod line-1-0-abc: MountVolume.SetUp failed for volume \"thingsboard\" : secret \"gateway\" not found".into(),
        };
        let status = |waited_s: i64| SocketConnectorStatus {
            conditions: conditions(&missing, Some(1))
                .into_iter()
                .map(|mut c| {
                    c.last_transition_time =
                        Time(Timestamp::from_second(1_000_000 - waited_s).unwrap());
                    c
                })
                .collect(),
            ..SocketConnectorStatus::default()
        };
        let waiting = conditions(&missing, Some(1));
        assert_eq!(find(&waiting, "Ready").reason, "SecretMissing");
        assert!(find(&waiting, "Ready")
            .message
            .contains("secret \"gateway\" not found"));
        assert_eq!(find(&waiting, "Degraded").status, "True");
        assert_eq!(find(&waiting, "ConfigValid").status, "True");
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(mount_poll_interval(None, now), Duration::from_secs(2));
        assert_eq!(
            mount_poll_interval(Some(&status(10)), now),
            Duration::from_secs(2)
        );
        assert_eq!(
            mount_poll_interval(Some(&status(600)), now),
            Duration::from_secs(15)
        );
    }
}
