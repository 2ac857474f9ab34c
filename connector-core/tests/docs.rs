//! The configuration reference documents every key the schema (and so the CRD) knows.

use std::collections::BTreeSet;

use connector_core::config::ConnectorConfig;
use serde_json::Value;

fn property_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                names.extend(properties.keys().cloned());
            }
            map.values().for_each(|v| property_names(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| property_names(v, names)),
        _ => {}
    }
}

#[test]
fn every_config_key_is_documented() {
    let schema = serde_json::to_value(schemars::schema_for!(ConnectorConfig)).unwrap();
    let mut names = BTreeSet::new();
    property_names(&schema, &mut names);
    assert!(names.contains("deviceName") && names.contains("bufferSize"));
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .unwrap();
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
}

#[test]
fn every_schema_property_has_a_description() {
    let schema = serde_json::to_value(schemars::schema_for!(ConnectorConfig)).unwrap();
    let mut undocumented = Vec::new();
    let definitions = schema["$defs"].as_object().cloned().unwrap_or_default();
    let mut objects = vec![("ConnectorConfig".to_owned(), schema.clone())];
    objects.extend(definitions);
    for (name, definition) in objects {
        if let Some(properties) = definition["properties"].as_object() {
            for (key, property) in properties {
                if property.get("description").is_none() {
                    undocumented.push(format!("{name}.{key}"));
                }
            }
        }
    }
    assert!(undocumented.is_empty(), "no description: {undocumented:?}");
}
