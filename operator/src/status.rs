//! Status conditions (metav1.Condition shape), computed without IO from what reconcile observed.
//! A condition's `lastTransitionTime` changes only when its status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::SocketConnectorStatus;
use crate::failure::Failure;

impl Observation {
    /// The failure this observation reports, if it is one.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Self::Invalid { failure, .. } => Some(*failure),
            Self::SecretMissing { .. } => Some(Failure::SecretMissing),
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
    /// A referenced Secret (or key) is missing; nothing was applied.
    SecretMissing { message: String },
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
        Observation::SecretMissing { message } => vec![
            c(
                "Ready",
                false,
                Failure::SecretMissing.reason(),
                message.clone(),
            ),
            c(
                "Progressing",
                false,
                Failure::SecretMissing.reason(),
                "waiting for the Secret".to_owned(),
            ),
            c(
                "Degraded",
                true,
                Failure::SecretMissing.reason(),
                message.clone(),
            ),
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

/// The condition that says whether the connector pods reach ThingsBoard.
pub const THINGSBOARD_CONNECTED: &str = "ThingsBoardConnected";

/// What one running connector pod answered on `GET /status` (its metrics port), or why it did not.
#[derive(Debug, Clone, PartialEq)]
pub struct PodLink {
    pub pod: String,
    pub answer: Result<String, String>,
}

/// One pod's link to ThingsBoard, read from its `/status` JSON.
enum Link {
    Connected,
    /// Not connected yet, no attempt has failed.
    Connecting,
    /// The last attempt failed: the connector's reason label and what to check.
    Failed {
        reason: String,
        message: String,
    },
    Unreachable(String),
}

fn link(answer: &Result<String, String>) -> Link {
    let status = match answer {
        Ok(body) => match serde_json::from_str::<serde_json::Value>(body) {
            Ok(status) => status,
            Err(error) => return Link::Unreachable(format!("/status is not JSON: {error}")),
        },
        Err(error) => return Link::Unreachable(error.clone()),
    };
    let thingsboard = &status["thingsboard"];
    match (
        thingsboard["connected"].as_bool(),
        thingsboard["reason"].as_str(),
    ) {
        (Some(true), _) => Link::Connected,
        (Some(false), None) => Link::Connecting,
        (Some(false), Some(reason)) => Link::Failed {
            reason: reason.to_owned(),
            message: thingsboard["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        },
        (None, _) => Link::Unreachable("/status has no thingsboard.connected".to_owned()),
    }
}

/// `bad_credentials` → `BadCredentials` (a condition reason is CamelCase by convention).
fn camel_case(label: &str) -> String {
    label
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `ThingsBoardConnected` from what the running pods answered: False with the connector's own
/// reason when a pod's last attempt failed (that is what the user must fix), Unknown while a pod
/// cannot be asked or has not connected yet, True when every pod is connected.
pub fn thingsboard_condition(links: &[PodLink], generation: Option<i64>) -> Condition {
    let total = links.len();
    let read: Vec<(&str, Link)> = links
        .iter()
        .map(|l| (l.pod.as_str(), link(&l.answer)))
        .collect();
    let failed = read
        .iter()
        .filter(|(_, l)| matches!(l, Link::Failed { .. }));
    let (status, reason, message) =
        if let Some((pod, Link::Failed { reason, message })) = failed.clone().next() {
            let count = failed.count();
            (
                "False",
                camel_case(reason),
                format!("pod {pod}: {message} ({count} of {total} pods not connected)"),
            )
        } else if let Some((pod, Link::Unreachable(error))) =
            read.iter().find(|(_, l)| matches!(l, Link::Unreachable(_)))
        {
            (
                "Unknown",
                "StatusUnavailable".to_owned(),
                format!("pod {pod}: {error}"),
            )
        } else if let Some((pod, _)) = read.iter().find(|(_, l)| matches!(l, Link::Connecting)) {
            (
                "Unknown",
                "Connecting".to_owned(),
                format!("pod {pod} has not connected to ThingsBoard yet"),
            )
        } else if total == 0 {
            (
                "Unknown",
                "NoPods".to_owned(),
                "no running connector pod to ask".to_owned(),
            )
        } else {
            (
                "True",
                "Connected".to_owned(),
                format!("{total}/{total} connector pods connected to ThingsBoard"),
            )
        };
    Condition {
        type_: THINGSBOARD_CONNECTED.to_owned(),
        status: status.to_owned(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Adds `ThingsBoardConnected`: from the pods when they were asked this round, else the last one
/// (a spec that cannot be rolled out does not stop the running pods).
pub fn with_thingsboard_link(
    conditions: &mut Vec<Condition>,
    links: Option<&[PodLink]>,
    old: &[Condition],
    generation: Option<i64>,
) {
    let condition = match links {
        Some(links) => Some(thingsboard_condition(links, generation)),
        None => old
            .iter()
            .find(|c| c.type_ == THINGSBOARD_CONNECTED)
            .cloned(),
    };
    conditions.extend(condition);
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

/// Secrets are not watched (that would need list and watch on every Secret of the namespace,
/// values included): while one is missing the operator looks again, every 2 s for the first
/// 2 minutes of waiting (a Secret created right after its SocketConnector), then every 15 s.
pub fn secret_poll_interval(status: Option<&SocketConnectorStatus>, now: Timestamp) -> Duration {
    let waiting_since = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "SecretMissing")
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

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
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

    fn conditions_of_invalid() -> Vec<Condition> {
        conditions(
            &Observation::Invalid {
                failure: Failure::InvalidConfig,
                message: "bad".into(),
            },
            Some(1),
        )
    }

    fn pod(name: &str, answer: Result<&str, &str>) -> PodLink {
        PodLink {
            pod: name.to_owned(),
            answer: answer.map(str::to_owned).map_err(str::to_owned),
        }
    }

    #[test]
    fn thingsboard_connected_says_what_the_pods_report() {
        let connected = r#"{"thingsboard":{"connected":true}}"#;
        let refused = r#"{"thingsboard":{"connected":false,"reason":"bad_credentials","message":"ThingsBoard refused the credentials: check the access token"}}"#;
        let summary = |links: &[PodLink]| {
            let c = thingsboard_condition(links, Some(4));
            assert_eq!(c.observed_generation, Some(4));
            (c.status, c.reason, c.message)
        };
        let text = |s: &str, r: &str, m: &str| (s.to_owned(), r.to_owned(), m.to_owned());
        assert_eq!(
            summary(&[pod("a", Ok(connected)), pod("b", Ok(connected))]),
            text(
                "True",
                "Connected",
                "2/2 connector pods connected to ThingsBoard"
            )
        );
        assert_eq!(
            summary(&[
                pod("a", Ok(connected)),
                pod("b", Err("connect to 10.0.0.9:9100: Connection refused")),
                pod("c", Ok(refused)),
            ]),
            text(
                "False",
                "BadCredentials",
                "pod c: ThingsBoard refused the credentials: check the access token (1 of 3 pods not connected)"
            )
        );
        assert_eq!(
            summary(&[
                pod("a", Ok(connected)),
                pod("b", Err("no answer within 2000 ms"))
            ]),
            text(
                "Unknown",
                "StatusUnavailable",
                "pod b: no answer within 2000 ms"
            )
        );
        assert_eq!(summary(&[pod("a", Ok("<html>"))]).1, "StatusUnavailable");
        assert_eq!(
            summary(&[pod("a", Ok(r#"{"thingsboard":{"connected":false}}"#))]),
            text(
                "Unknown",
                "Connecting",
                "pod a has not connected to ThingsBoard yet"
            )
        );
        assert_eq!(
            summary(&[]),
            text("Unknown", "NoPods", "no running connector pod to ask")
        );
        assert_eq!(camel_case("tls_unknown_ca"), "TlsUnknownCa");
    }

    #[test]
    fn a_round_without_pods_to_ask_keeps_the_last_thingsboard_condition() {
        let old = vec![thingsboard_condition(
            &[pod("a", Ok(r#"{"thingsboard":{"connected":true}}"#))],
            Some(1),
        )];
        let mut invalid = conditions_of_invalid();
        with_thingsboard_link(&mut invalid, None, &old, Some(2));
        assert_eq!(find(&invalid, THINGSBOARD_CONNECTED), &old[0]);
        let mut asked = conditions_of_invalid();
        with_thingsboard_link(&mut asked, Some(&[]), &old, Some(2));
        assert_eq!(find(&asked, THINGSBOARD_CONNECTED).reason, "NoPods");
        let mut first = conditions_of_invalid();
        with_thingsboard_link(&mut first, None, &[], Some(2));
        assert_eq!(first.len(), 4);
    }

    #[test]
    fn a_missing_secret_is_looked_for_often_at_first() {
        let missing = Observation::SecretMissing {
            message: "Secret plant/gateway does not exist".into(),
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
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(secret_poll_interval(None, now), Duration::from_secs(2));
        assert_eq!(
            secret_poll_interval(Some(&status(10)), now),
            Duration::from_secs(2)
        );
        assert_eq!(
            secret_poll_interval(Some(&status(600)), now),
            Duration::from_secs(15)
        );
    }
}
