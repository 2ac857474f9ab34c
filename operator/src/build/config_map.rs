//! The ConfigMap holding the rendered `socket.json`, which the running connector hot-reloads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{config_map_name, metadata, CONFIG_FILE};
use crate::crd::SocketConnector;
use crate::validate::Plan;

pub fn config_map(sc: &SocketConnector, plan: &Plan) -> ConfigMap {
    ConfigMap {
        metadata: metadata(sc, config_map_name(sc), &[]),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            plan.config_json.clone(),
        )])),
        ..ConfigMap::default()
    }
}
