//! Drift: whether a live child still holds what the operator applied. The API server adds
//! defaults and status to what it stores and never removes a field the operator set, so the
//! applied object must be contained in the live one; anything else was changed by someone else.

use serde_json::Value;

/// The JSON path of the first field of `desired` that `live` does not hold, or none.
pub fn first_difference(desired: &Value, live: &Value) -> Option<String> {
    difference(desired, Some(live), String::new())
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

fn difference(desired: &Value, live: Option<&Value>, path: String) -> Option<String> {
    // The API server drops empty lists and maps and nulls.
    if is_empty(desired) && live.is_none_or(is_empty) {
        return None;
    }
    let Some(live) = live else {
        return Some(path);
    };
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .find_map(|(key, value)| difference(value, have.get(key), format!("{path}.{key}"))),
        (Value::Array(want), Value::Array(have)) if want.len() == have.len() => want
            .iter()
            .zip(have)
            .enumerate()
            .find_map(|(index, (w, h))| difference(w, Some(h), format!("{path}[{index}]"))),
        (Value::Number(want), Value::Number(have)) => {
            (want.as_f64() != have.as_f64()).then_some(path)
        }
        (want, have) => (want != have).then_some(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_are_no_drift() {
        let desired = json!({"spec": {"ports": [{"name": "device", "port": 50000}], "selector": {},
                             "extra": null}});
        let live = json!({"spec": {"ports": [{"name": "device", "port": 50000.0, "nodePort": 31000}],
                          "sessionAffinity": "None"}, "status": {}});
        assert_eq!(first_difference(&desired, &live), None);
    }

    #[test]
    fn a_changed_removed_or_added_entry_is_drift() {
        let desired = json!({"spec": {"ports": [{"port": 50000}], "replicas": 1,
                             "labels": {"app": "x"}}});
        let changed =
            json!({"spec": {"ports": [{"port": 1234}], "replicas": 1, "labels": {"app": "x"}}});
        assert_eq!(
            first_difference(&desired, &changed).as_deref(),
            Some(".spec.ports[0].port")
        );
        let removed = json!({"spec": {"ports": [{"port": 50000}], "replicas": 1, "labels": {}}});
        assert_eq!(
            first_difference(&desired, &removed).as_deref(),
            Some(".spec.labels.app")
        );
        let added = json!({"spec": {"ports": [{"port": 50000}, {"port": 9100}], "replicas": 1,
                           "labels": {"app": "x"}}});
        assert_eq!(
            first_difference(&desired, &added).as_deref(),
            Some(".spec.ports")
        );
        let scaled =
            json!({"spec": {"ports": [{"port": 50000}], "replicas": 3, "labels": {"app": "x"}}});
        assert_eq!(
            first_difference(&desired, &scaled).as_deref(),
            Some(".spec.replicas")
        );
    }
}
