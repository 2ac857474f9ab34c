//! `ConfiguredInThingsBoard`, with remote configuration on: whether the connector pods run what
//! ThingsBoard's UI saved rather than `spec.connector`, or were switched off there, from what
//! each running pod answers on `GET /status` (the same answers as `ThingsBoardConnected`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::thingsboard::PodLink;

/// The condition that says whether ThingsBoard's UI decides what the pods run.
pub const CONFIGURED_IN_THINGSBOARD: &str = "ConfiguredInThingsBoard";

/// What one pod said of its configuration; `None` when it did not answer with a status.
enum Origin {
    SpecConnector,
    /// Saved in ThingsBoard's UI at this time (ms since the epoch).
    EditedInThingsBoard(Option<i64>),
    SwitchedOff,
}

fn origin(answer: &Result<String, String>) -> Option<Origin> {
    let status: serde_json::Value = serde_json::from_str(answer.as_ref().ok()?).ok()?;
    if status["deviceSocket"]["reason"] == "inactive_in_thingsboard" {
        return Some(Origin::SwitchedOff);
    }
    match status["configuration"]["source"].as_str()? {
        "thingsboard" => Some(Origin::EditedInThingsBoard(
            status["configuration"]["savedAtMs"].as_i64(),
        )),
        _ => Some(Origin::SpecConnector),
    }
}

/// `ConfiguredInThingsBoard` from the pods that answered; `None` when none did (the last one
/// stays). True when a pod was switched off in ThingsBoard (`SwitchedOffInThingsBoard`) or runs
/// an edit from its UI (`EditedInThingsBoard`), False (`SpecConnector`) when every pod that
/// answered runs `spec.connector`.
pub fn configuration_condition(links: &[PodLink], generation: Option<i64>) -> Option<Condition> {
    let read: Vec<(&str, Origin)> = links
        .iter()
        .filter_map(|l| Some((l.pod.as_str(), origin(&l.answer)?)))
        .collect();
    let total = read.len();
    if total == 0 {
        return None;
    }
    let count = |wanted: fn(&Origin) -> bool| read.iter().filter(|(_, o)| wanted(o)).count();
    let switched_off = count(|o| matches!(o, Origin::SwitchedOff));
    let edited = read.iter().find_map(|(pod, o)| match o {
        Origin::EditedInThingsBoard(saved) => Some((pod, saved)),
        _ => None,
    });
    let (status, reason, message) = if let Some((pod, _)) =
        read.iter().find(|(_, o)| matches!(o, Origin::SwitchedOff))
    {
        (
            "True",
            "SwitchedOffInThingsBoard",
            format!(
                "pod {pod}: ThingsBoard lists the connector as inactive (active_connectors), so its device socket is closed; switch it on in ThingsBoard's UI ({switched_off} of {total} pods)"
            ),
        )
    } else if let Some((pod, saved)) = edited {
        let when = saved
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        let edited = count(|o| matches!(o, Origin::EditedInThingsBoard(_)));
        (
            "True",
            "EditedInThingsBoard",
            format!(
                "pod {pod} runs the configuration saved in ThingsBoard's UI{when}, not spec.connector ({edited} of {total} pods); a later change of spec.connector wins again"
            ),
        )
    } else {
        (
            "False",
            "SpecConnector",
            format!("{total}/{total} connector pods run spec.connector"),
        )
    };
    Some(Condition {
        type_: CONFIGURED_IN_THINGSBOARD.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    })
}

/// Adds `ConfiguredInThingsBoard` when remote configuration is on: from the pods when they
/// answered this round, else the last one.
pub fn with_configuration_origin(
    conditions: &mut Vec<Condition>,
    remote_configuration: bool,
    links: Option<&[PodLink]>,
    old: &[Condition],
    generation: Option<i64>,
) {
    if !remote_configuration {
        return;
    }
    let condition = links
        .and_then(|links| configuration_condition(links, generation))
        .or_else(|| {
            old.iter()
                .find(|c| c.type_ == CONFIGURED_IN_THINGSBOARD)
                .cloned()
        });
    conditions.extend(condition);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::pod;

    const FILE: &str = r#"{"thingsboard":{"connected":true},"configuration":{"source":"file"},"deviceSocket":{"open":true}}"#;
    const EDITED: &str = r#"{"thingsboard":{"connected":true},"configuration":{"source":"thingsboard","savedAtMs":1764000000000},"deviceSocket":{"open":true}}"#;
    const OFF: &str = r#"{"thingsboard":{"connected":true},"configuration":{"source":"file"},"deviceSocket":{"open":false,"reason":"inactive_in_thingsboard"}}"#;

    fn summary(links: &[PodLink]) -> Option<(String, String, String)> {
        configuration_condition(links, Some(3)).map(|c| (c.status, c.reason, c.message))
    }

    #[test]
    fn configured_in_thingsboard_says_what_the_pods_run() {
        let text = |s: &str, r: &str, m: &str| Some((s.to_owned(), r.to_owned(), m.to_owned()));
        assert_eq!(
            summary(&[
                pod("a", Ok(FILE)),
                pod("b", Err("no answer within 2000 ms"))
            ]),
            text(
                "False",
                "SpecConnector",
                "1/1 connector pods run spec.connector"
            )
        );
        assert_eq!(
            summary(&[pod("a", Ok(FILE)), pod("b", Ok(EDITED))]),
            text(
                "True",
                "EditedInThingsBoard",
                "pod b runs the configuration saved in ThingsBoard's UI at 2025-11-24T16:00:00Z, not spec.connector (1 of 2 pods); a later change of spec.connector wins again"
            )
        );
        assert_eq!(
            summary(&[pod("a", Ok(EDITED)), pod("b", Ok(OFF))]),
            text(
                "True",
                "SwitchedOffInThingsBoard",
                "pod b: ThingsBoard lists the connector as inactive (active_connectors), so its device socket is closed; switch it on in ThingsBoard's UI (1 of 2 pods)"
            )
        );
        // A connector from before /status said where its configuration came from.
        assert_eq!(
            summary(&[pod("a", Ok(r#"{"thingsboard":{"connected":true}}"#))]),
            None
        );
        assert_eq!(summary(&[pod("a", Err("refused"))]), None);
    }

    #[test]
    fn only_with_remote_configuration_and_kept_when_no_pod_answered() {
        let mut off = Vec::new();
        with_configuration_origin(&mut off, false, Some(&[pod("a", Ok(EDITED))]), &[], None);
        assert!(off.is_empty());
        let mut on = Vec::new();
        with_configuration_origin(&mut on, true, Some(&[pod("a", Ok(EDITED))]), &[], None);
        assert_eq!(on[0].reason, "EditedInThingsBoard");
        let mut later = Vec::new();
        with_configuration_origin(&mut later, true, Some(&[pod("a", Err("x"))]), &on, None);
        assert_eq!(later, on);
    }
}
