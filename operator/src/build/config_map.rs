//! The ConfigMap holding the rendered `socket.json`, which the running connector hot-reloads,
//! and with remote configuration, when `spec.connector` last changed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{config_map_name, metadata, CONFIG_FILE};
use crate::crd::SocketConnector;
use crate::validate::Plan;

/// The key holding [`connector_changed_at_ms`] (the connector's `CONFIG_CHANGED_AT_MS`).
pub const CHANGED_AT_KEY: &str = "connector-changed-at-ms";

pub fn config_map(sc: &SocketConnector, plan: &Plan) -> ConfigMap {
    let mut data = BTreeMap::from([(CONFIG_FILE.to_owned(), plan.config_json.clone())]);
    if remote_configuration(sc) {
        data.insert(
            CHANGED_AT_KEY.to_owned(),
            connector_changed_at_ms(sc).to_string(),
        );
    }
    ConfigMap {
        metadata: metadata(sc, config_map_name(sc), &[]),
        data: Some(data),
        ..ConfigMap::default()
    }
}

pub fn remote_configuration(sc: &SocketConnector) -> bool {
    sc.spec.thingsboard.remote_configuration == Some(true)
}

/// When `spec.connector` last changed, in ms: the apiserver stamps each field manager's entry in
/// `managedFields` with the time of its last change, so the newest entry that owns
/// `spec.connector` says it; the creation time when none does. A ThingsBoard UI edit newer than
/// this wins over the ConfigMap's `socket.json` at the connector's start.
pub fn connector_changed_at_ms(sc: &SocketConnector) -> i64 {
    let owned = sc
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|fields| fields.0.get("f:spec"))
                .and_then(|spec| spec.get("f:connector"))
                .is_some()
        })
        .filter_map(|entry| entry.time.as_ref())
        .map(|time| time.0.as_millisecond())
        .max();
    owned
        .or_else(|| {
            sc.metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0.as_millisecond())
        })
        .unwrap_or(0)
}
