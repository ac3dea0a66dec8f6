//! The JSON Schema of the machine config, generated from the schema types
//! (draft 2020-12), so editors can validate and complete `node.yaml`.
//!
//! The schema covers structure and types (unknown fields are refused, as
//! in parsing); the semantic checks of [`crate::validate`] are not
//! expressible in it.

use schemars::generate::SchemaSettings;

use crate::schema::{MachineConfig, API_VERSION};

/// The schema's `$id`.
pub const SCHEMA_ID: &str = "https://keelson.dev/schemas/machine-config-v1alpha1.json";

/// The JSON Schema (draft 2020-12) of [`MachineConfig`], with `$id` and
/// `title`.
pub fn json_schema() -> serde_json::Value {
    let schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<MachineConfig>();
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("$id".into(), SCHEMA_ID.into());
        obj.insert(
            "title".into(),
            format!("Keelson MachineConfig ({API_VERSION})").into(),
        );
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_draft_2020_12_and_strict() {
        let s = json_schema();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s["$id"], SCHEMA_ID);
        assert_eq!(s["additionalProperties"], false);
        let required = s["required"].as_array().cloned().unwrap_or_default();
        for field in ["apiVersion", "kind", "machine"] {
            assert!(required.iter().any(|r| r == field), "{field} not required");
        }
        assert!(s["$defs"]["Interface"]["properties"]["mac"].is_object());
    }
}
