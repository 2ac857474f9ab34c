//! Devices renamed in ThingsBoard. When a user renames a device the gateway created, ThingsBoard
//! tells the gateway with RPC `gateway_device_renamed` (`{"<old name>": "<new name>"}`) and, when
//! the device is deleted, `gateway_device_deleted` (`"<name>"`). With `handleDeviceRenaming` (on
//! by default) the gateway then publishes the device's data under the new name and maps requests
//! for the new name back to the configured device; deleting the renamed device forgets the
//! renaming, so the configured name comes back. This is the gateway's `__renamed_devices` logic
//! (`tb_gateway_service.py`) without its IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Configured device name → its name in ThingsBoard, for the devices renamed there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceRenames {
    by_configured: BTreeMap<String, String>,
}

/// A renaming RPC's parameters that are not what ThingsBoard sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRenameParams(pub String);

impl std::fmt::Display for BadRenameParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl DeviceRenames {
    pub fn is_empty(&self) -> bool {
        self.by_configured.is_empty()
    }

    /// The name ThingsBoard knows a configured device by.
    pub fn in_thingsboard<'a>(&'a self, configured: &'a str) -> &'a str {
        self.by_configured
            .get(configured)
            .map_or(configured, String::as_str)
    }

    /// The configured device a name from ThingsBoard stands for.
    pub fn configured<'a>(&'a self, in_thingsboard: &'a str) -> &'a str {
        self.configured_of(in_thingsboard).unwrap_or(in_thingsboard)
    }

    fn configured_of(&self, in_thingsboard: &str) -> Option<&str> {
        self.by_configured
            .iter()
            .find(|(_, renamed)| renamed.as_str() == in_thingsboard)
            .map(|(configured, _)| configured.as_str())
    }

    /// `gateway_device_renamed`: `old` (a configured name, or the name of an earlier renaming)
    /// is now `new`. Renaming back to the configured name removes the renaming. Whether
    /// anything changed.
    pub fn renamed(&mut self, old: &str, new: &str) -> bool {
        let configured = match self.configured_of(old).map(str::to_owned) {
            Some(configured) if configured == new => {
                return self.by_configured.remove(&configured).is_some()
            }
            Some(configured) => configured,
            None if old == new => return false,
            None => old.to_owned(),
        };
        self.by_configured
            .insert(configured, new.to_owned())
            .as_deref()
            != Some(new)
    }

    /// `gateway_device_deleted`: a renamed device deleted in ThingsBoard is forgotten, so its data
    /// creates the configured name again. Whether anything changed.
    pub fn deleted(&mut self, name: &str) -> bool {
        match self.configured_of(name).map(str::to_owned) {
            Some(configured) => self.by_configured.remove(&configured).is_some(),
            None => false,
        }
    }

    /// Applies `gateway_device_renamed`'s params: an object whose first entry is old → new (the
    /// gateway reads only that one).
    pub fn apply_renamed(&mut self, params: &Value) -> Result<bool, BadRenameParams> {
        let entry = params.as_object().and_then(|map| map.iter().next());
        match entry {
            Some((old, Value::String(new))) if !old.is_empty() && !new.is_empty() => {
                Ok(self.renamed(old, new))
            }
            _ => Err(BadRenameParams(format!(
                "gateway_device_renamed expects {{\"<old name>\": \"<new name>\"}}, got {params}"
            ))),
        }
    }

    /// Applies `gateway_device_deleted`'s params: the device's name.
    pub fn apply_deleted(&mut self, params: &Value) -> Result<bool, BadRenameParams> {
        match params {
            Value::String(name) if !name.is_empty() => Ok(self.deleted(name)),
            _ => Err(BadRenameParams(format!(
                "gateway_device_deleted expects the device's name, got {params}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_renamed_device_is_published_under_its_new_name_and_addressed_by_it() {
        let mut renames = DeviceRenames::default();
        assert!(renames.renamed("Boiler", "Boiler 1"));
        assert_eq!(renames.in_thingsboard("Boiler"), "Boiler 1");
        assert_eq!(renames.configured("Boiler 1"), "Boiler");
        // Others pass through.
        assert_eq!(renames.in_thingsboard("Pump"), "Pump");
        assert_eq!(renames.configured("Pump"), "Pump");
        // The same notification twice changes nothing.
        assert!(!renames.renamed("Boiler", "Boiler 1"));
    }

    #[test]
    fn renaming_again_follows_the_chain_and_renaming_back_forgets() {
        let mut renames = DeviceRenames::default();
        renames.renamed("Boiler", "Boiler 1");
        assert!(renames.renamed("Boiler 1", "Boiler 2"));
        assert_eq!(renames.in_thingsboard("Boiler"), "Boiler 2");
        assert_eq!(renames.configured("Boiler 1"), "Boiler 1");
        assert!(renames.renamed("Boiler 2", "Boiler"));
        assert!(renames.is_empty());
    }

    #[test]
    fn deleting_the_renamed_device_brings_the_configured_name_back() {
        let mut renames = DeviceRenames::default();
        renames.renamed("Boiler", "Boiler 1");
        // A device that was never renamed: nothing to forget.
        assert!(!renames.deleted("Pump"));
        assert!(!renames.deleted("Boiler"));
        assert!(renames.deleted("Boiler 1"));
        assert_eq!(renames.in_thingsboard("Boiler"), "Boiler");
    }

    #[test]
    fn params_as_thingsboard_sends_them() {
        let mut renames = DeviceRenames::default();
        assert_eq!(renames.apply_renamed(&json!({"A": "B"})), Ok(true));
        assert_eq!(renames.apply_deleted(&json!("B")), Ok(true));
        for bad in [json!("A"), json!({}), json!({"A": 1}), json!({"A": ""})] {
            assert!(renames.apply_renamed(&bad).is_err(), "{bad}");
        }
        assert!(renames.apply_deleted(&json!({"A": "B"})).is_err());
        assert!(renames.is_empty());
    }

    #[test]
    fn kept_as_a_plain_map() {
        let mut renames = DeviceRenames::default();
        renames.renamed("A", "B");
        let text = serde_json::to_string(&renames).unwrap();
        assert_eq!(text, r#"{"A":"B"}"#);
        assert_eq!(
            serde_json::from_str::<DeviceRenames>(&text).unwrap(),
            renames
        );
    }
}
