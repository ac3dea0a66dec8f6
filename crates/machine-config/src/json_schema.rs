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

    #[test]
    fn install_disk_is_a_string_or_a_strict_selector() {
        let s = json_schema();
        let defs = &s["$defs"];
        assert_eq!(
            defs["Install"]["properties"]["disk"]["$ref"],
            "#/$defs/DiskTarget"
        );
        let any_of = defs["DiskTarget"]["anyOf"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(any_of.len(), 2, "{any_of:?}");
        assert_eq!(any_of[0]["type"], "string");
        assert_eq!(any_of[1]["$ref"], "#/$defs/DiskSelector");
        let sel = &defs["DiskSelector"];
        assert_eq!(sel["additionalProperties"], false);
        assert_eq!(sel["minProperties"], 1);
        for field in ["size", "model", "serial", "byId"] {
            assert!(sel["properties"][field].is_object(), "{field}");
        }
        assert_eq!(
            defs["SizeExpr"]["type"],
            serde_json::json!(["string", "integer"])
        );
    }
}
