//! `ThingsBoardConnected`: whether the connector pods reach ThingsBoard, from what each running
//! pod answers on `GET /status` (its metrics port).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::{conditions_of_invalid, find, pod};

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
}
