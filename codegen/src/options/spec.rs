//! Which runner spec field an option fills: the spec's fields are read from its JSON Schema
//! (the serde names of `RunnerSpec`), so the drift test and `lint` see exactly what the
//! generator reads.

use std::collections::BTreeSet;

use serde_json::Value;

/// The schema of the runner spec as JSON.
pub fn runner_spec_schema() -> Value {
    serde_json::to_value(crate::schema::runner_spec_schema()).expect("a schema is JSON")
}

/// A schema with `$ref` followed and `Option`'s `anyOf [T, null]` unwrapped.
pub(crate) fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..32 {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match reference
                .strip_prefix("#/$defs/")
                .and_then(|name| root.get("$defs")?.get(name))
            {
                Some(target) => schema = target,
                None => return schema,
            }
        } else if let Some(variants) = schema.get("anyOf").and_then(Value::as_array)
            && let Some(non_null) = variants
                .iter()
                .find(|v| v.get("type").and_then(Value::as_str) != Some("null"))
        {
            schema = non_null;
        } else {
            return schema;
        }
    }
    schema
}

fn is_object_with_properties(schema: &Value) -> bool {
    schema.get("properties").is_some_and(Value::is_object)
}

/// Every leaf field of the runner spec, dotted, with `*` for array elements:
/// `shares.*.proto`, `vsock.cid`, `credentialFiles` (a map of plain values is one field).
pub fn runner_spec_fields() -> BTreeSet<String> {
    schema_fields(&runner_spec_schema())
}

/// Every leaf field a JSON Schema describes: `*` for array elements, `<name>` for the values
/// of a map whose values are objects.
pub fn schema_fields(schema: &Value) -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    collect_fields(schema, schema, "", &mut fields);
    fields
}

fn collect_fields(root: &Value, schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let schema = resolve(root, schema);
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let property = resolve(root, property);
        let items = property.get("items").map(|items| resolve(root, items));
        let values = property
            .get("additionalProperties")
            .filter(|v| v.is_object())
            .map(|values| resolve(root, values));
        if is_object_with_properties(property) {
            collect_fields(root, property, &path, out);
        } else if let Some(items) = items.filter(|i| is_object_with_properties(i)) {
            collect_fields(root, items, &format!("{path}.*"), out);
        } else if let Some(values) = values.filter(|v| is_object_with_properties(v)) {
            collect_fields(root, values, &format!("{path}.<name>"), out);
        } else {
            out.insert(path);
        }
    }
}

/// The attribute the guest module's options are under. Below it, an option's path is the path
/// of the runner spec field it fills: `microvm.vsock.cid` fills `vsock.cid`.
pub const GUEST_OPTIONS: &str = "microvm";

/// The spec field an option of the guest module would fill: its name without `microvm.`.
pub fn spec_field_of(option: &str) -> Option<&str> {
    option.strip_prefix(GUEST_OPTIONS)?.strip_prefix('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_refs_arrays_and_options() {
        let fields = runner_spec_fields();
        for field in [
            "specVersion",
            "shares.*.proto",
            "interfaces.*.macvtap.link",
            "vsock.cid",
            "credentialFiles",
            "firecracker.extraConfig",
            "qemu.pcieRootPorts.*.id",
            "deflateOnOOM",
            "cloud-hypervisor.platformOEMStrings",
        ] {
            assert!(fields.contains(field), "{field} missing from {fields:?}");
        }
        assert!(!fields.contains("shares"), "containers are not fields");
    }

    #[test]
    fn guest_options_name_their_spec_field() {
        assert_eq!(spec_field_of("microvm.vsock.cid"), Some("vsock.cid"));
        assert_eq!(spec_field_of("microvmx.vcpu"), None);
        assert_eq!(spec_field_of("networking.hostName"), None);
    }
}
