//! docs/workloads.md is the one table of what Wharf does with each field
//! of a Deployment, ConfigMap, Secret, PersistentVolumeClaim and
//! HorizontalPodAutoscaler: every
//! field the types read (so every field Wharf honours, accepts or checks)
//! must be in it, or a user reading the table could not tell what happens
//! to it.

use std::collections::BTreeSet;

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;
use wharf_api::{ConfigMap, Deployment, HorizontalPodAutoscaler, PersistentVolumeClaim, Secret};

const DOC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/workloads.md"
));

/// The top-level `start` properties of `T`'s schema that exist, with every
/// property name under them, following references.
fn fields_of<T: JsonSchema>(start: &[&str]) -> BTreeSet<String> {
    let mut generator = SchemaGenerator::default();
    let root = generator.root_schema_for::<T>().to_value();
    let definitions = root.get("$defs").cloned().unwrap_or(Value::Null);
    let mut found = BTreeSet::new();
    for name in start {
        if let Some(schema) = root["properties"].get(*name) {
            found.insert(name.to_string());
            collect(schema, &definitions, &mut found, &mut BTreeSet::new());
        }
    }
    found
}

fn collect(
    schema: &Value,
    definitions: &Value,
    found: &mut BTreeSet<String>,
    seen: &mut BTreeSet<String>,
) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let name = reference.rsplit('/').next().unwrap_or_default().to_string();
                if seen.insert(name.clone()) {
                    collect(&definitions[&name], definitions, found, seen);
                }
            }
            if let Some(Value::Object(properties)) = map.get("properties") {
                for (name, property) in properties {
                    found.insert(name.clone());
                    collect(property, definitions, found, seen);
                }
            }
            for (key, value) in map {
                if key != "properties" {
                    collect(value, definitions, found, seen);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, definitions, found, seen);
            }
        }
        _ => {}
    }
}

/// Whether the doc names `field` as code: `` `field` ``, `` `a.field` ``,
/// `` `field: x` ``, ...
fn documented(field: &str) -> bool {
    DOC.split('`').skip(1).step_by(2).any(|code| {
        code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .any(|word| word == field)
    })
}

#[test]
fn every_field_wharf_reads_is_in_the_table() {
    let mut fields = fields_of::<Deployment>(&["spec"]);
    fields.extend(fields_of::<ConfigMap>(&["data", "binaryData", "immutable"]));
    fields.extend(fields_of::<Secret>(&[
        "data",
        "stringData",
        "type",
        "immutable",
    ]));
    fields.extend(fields_of::<PersistentVolumeClaim>(&["spec", "status"]));
    fields.extend(fields_of::<HorizontalPodAutoscaler>(&["spec", "status"]));
    // The walk reaches the deepest fields, through references.
    for deep in [
        "claimName",
        "storageClassName",
        "runAsNonRoot",
        "subPath",
        "divisor",
        "defaultMode",
        "stringData",
        "stabilizationWindowSeconds",
    ] {
        assert!(fields.contains(deep), "{deep} not found in {fields:?}");
    }
    let missing: Vec<&String> = fields.iter().filter(|f| !documented(f)).collect();
    assert!(
        missing.is_empty(),
        "fields read but not in docs/workloads.md: {missing:?}"
    );
}
