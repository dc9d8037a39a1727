//! Checks that combine the settings of one VM: capability conflicts between literals, with the
//! generator's own capability table and `feature_uses`, and duplicate tags and ids.
//!
//! The literal settings are put together into a runner spec (placeholders where a required
//! field is not known, fields the spec cannot take left out), so the features a VM uses are
//! found exactly as the generator finds them. A feature whose evidence is not a literal — the
//! field itself is unknown or a placeholder, or a sibling choice field (an enum or a boolean)
//! is unknown and some value of it would not use the feature — is not reported.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::walk::{Facts, Scope};
use super::{Finding, codes};
use crate::capabilities;
use crate::json_path::{JsonPath, Segment};
use crate::nix_syntax::Span;
use crate::options::OptionType;
use crate::options::spec::{GUEST_OPTIONS, resolve, runner_spec_fields, runner_spec_schema};
use crate::path;
use crate::spec::{Hypervisor, RunnerSpec};
use crate::unique;

pub fn check(file: usize, scopes: &[Scope]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let spec = SpecContext {
        fields: runner_spec_fields(),
        schema: runner_spec_schema(),
    };
    for scope in scopes {
        let Some(built) = spec.spec(spec.json(&scope.facts, None)) else {
            continue;
        };
        findings.extend(capability_conflicts(file, &scope.facts, &spec, &built));
        findings.extend(duplicates(file, &scope.facts, &built));
    }
    // The guests of each host, in order: one pass, not one per host over every scope.
    let mut guests: BTreeMap<usize, Vec<&Scope>> = BTreeMap::new();
    for scope in scopes {
        if let Some(parent) = scope.parent {
            guests.entry(parent).or_default().push(scope);
        }
    }
    for host_guests in guests.values() {
        findings.extend(duplicate_cids(file, host_guests));
    }
    findings
}

struct SpecContext {
    fields: BTreeSet<String>,
    schema: Value,
}

fn is_usable(facts: &Facts, path: &JsonPath) -> bool {
    !facts.unknown.contains_key(path) && !facts.conflicted.contains(path)
}

/// The plain literal string or integer at a path.
fn literal<'f>(facts: &'f Facts, path: &JsonPath) -> Option<(&'f Value, &'f Span)> {
    if !is_usable(facts, path) {
        return None;
    }
    facts.values.get(path).map(|(v, s, _)| (v, s))
}

/// The span written for a path or its nearest ancestor.
fn span_for(facts: &Facts, path: &JsonPath) -> Option<Span> {
    path.ancestors().find_map(|p| {
        facts
            .values
            .get(&p)
            .map(|(_, span, _)| span)
            .or_else(|| facts.spans.get(&p))
            .cloned()
    })
}

/// `shares.*.proto` for `$.microvm.shares[3].proto` (without the leading `microvm`).
fn field_name(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Key(k) => k.clone(),
            Segment::Index(_) => "*".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether the spec has a field at (or above, for maps) this relative path.
fn in_spec(fields: &BTreeSet<String>, relative: &[Segment]) -> bool {
    (1..=relative.len()).any(|n| fields.contains(&field_name(&relative[..n])))
}

fn insert(root: &mut Value, segments: &[Segment], value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        *root = value;
        return;
    };
    let slot = match first {
        Segment::Key(key) => {
            if !root.is_object() {
                *root = Value::Object(Map::new());
            }
            let Value::Object(map) = root else { return };
            map.entry(key.clone()).or_insert(Value::Null)
        }
        Segment::Index(index) => {
            if !root.is_array() {
                *root = Value::Array(Vec::new());
            }
            let Value::Array(items) = root else { return };
            // Elements are inserted in order; an index beyond the next one has no element
            // before it and is not a place of this list.
            if *index == items.len() {
                items.push(Value::Object(Map::new()));
            }
            match items.get_mut(*index) {
                Some(item) => item,
                None => return,
            }
        }
    };
    insert(slot, rest, value);
}

fn remove(root: &mut Value, segments: &[Segment]) {
    let Some((last, parent)) = segments.split_last() else {
        return;
    };
    let mut node = root;
    for segment in parent {
        node = match (segment, node) {
            (Segment::Key(k), Value::Object(map)) => match map.get_mut(k) {
                Some(next) => next,
                None => return,
            },
            (Segment::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    if let (Segment::Key(k), Value::Object(map)) = (last, node) {
        map.remove(k);
    }
}

/// The relative path of `$.microvm.…`.
fn relative(path: &JsonPath) -> Option<&[Segment]> {
    match path.0.split_first() {
        Some((Segment::Key(first), rest)) if first == GUEST_OPTIONS => Some(rest),
        _ => None,
    }
}

fn absolute(relative: &JsonPath) -> JsonPath {
    let mut segments = vec![Segment::Key(GUEST_OPTIONS.to_owned())];
    segments.extend(relative.0.iter().cloned());
    JsonPath(segments)
}

impl SpecContext {
    /// The literal settings as spec JSON, with one path replaced by `alternative`.
    fn json(&self, facts: &Facts, alternative: Option<(&JsonPath, &Value)>) -> Value {
        let mut root = Value::Object(Map::new());
        for (path, len) in &facts.list_len {
            if let Some(rel) = relative(path)
                && is_usable(facts, path)
                && in_spec(&self.fields, rel)
            {
                for index in 0..*len {
                    let mut element = rel.to_vec();
                    element.push(Segment::Index(index));
                    insert(&mut root, &element, Value::Object(Map::new()));
                }
            }
        }
        for (path, (value, _, _)) in &facts.values {
            if let Some(rel) = relative(path)
                && is_usable(facts, path)
                && in_spec(&self.fields, rel)
            {
                insert(&mut root, rel, value.clone());
            }
        }
        if let Some((path, value)) = alternative
            && let Some(rel) = relative(path)
        {
            insert(&mut root, rel, value.clone());
        }
        root
    }

    /// Deserializes spec JSON, filling required fields with placeholders and dropping fields
    /// the spec cannot take. Returns the spec and the paths that are not the user's literals.
    fn spec(&self, mut json: Value) -> Option<(RunnerSpec, BTreeSet<JsonPath>)> {
        let mut not_literal = BTreeSet::new();
        for _ in 0..64 {
            fill_required(
                &mut json,
                &self.schema,
                &self.schema,
                &JsonPath::root(),
                &mut not_literal,
            );
            let error = match serde_path_to_error::deserialize::<_, RunnerSpec>(&json) {
                Ok(spec) => return Some((spec, not_literal)),
                Err(error) => error,
            };
            let JsonPath(mut segments) = JsonPath::from(error.path());
            // A bad list element takes the whole list with it: indices must not shift.
            if matches!(segments.last(), Some(Segment::Index(_)))
                && let Some(position) = segments.iter().rposition(|s| matches!(s, Segment::Key(_)))
            {
                segments.truncate(position + 1);
            }
            if segments.is_empty() {
                return None;
            }
            remove(&mut json, &segments);
            not_literal.insert(JsonPath(segments));
        }
        None
    }
}

fn placeholder(root: &Value, schema: &Value) -> Value {
    let schema = resolve(root, schema);
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return first.clone();
    }
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    if let Some(first) = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return placeholder(root, first);
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ => "null",
    };
    match ty {
        "string" => Value::from("/placeholder"),
        "integer" | "number" => Value::from(1),
        "boolean" => Value::Bool(false),
        "array" => Value::Array(Vec::new()),
        "object" => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

fn fill_required(
    value: &mut Value,
    root: &Value,
    schema: &Value,
    path: &JsonPath,
    filled: &mut BTreeSet<JsonPath>,
) {
    let schema = resolve(root, schema);
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let (Some(required), Some(properties)) =
                (schema.get("required").and_then(Value::as_array), properties)
            {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name)
                        && let Some(property) = properties.get(name)
                    {
                        map.insert(name.to_owned(), placeholder(root, property));
                        filled.insert(path.key(name));
                    }
                }
            }
            if let Some(properties) = properties {
                for (name, child) in map.iter_mut() {
                    if let Some(property) = properties.get(name) {
                        fill_required(child, root, property, &path.key(name), filled);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    fill_required(item, root, item_schema, &path.index(i), filled);
                }
            }
        }
        _ => {}
    }
}

/// The values an unknown choice field could take, when there are few.
fn alternatives(ty: &OptionType) -> Vec<Value> {
    match ty {
        OptionType::Bool => vec![Value::Bool(false), Value::Bool(true)],
        OptionType::Enum {
            values: Some(values),
            ..
        } => values.iter().map(|v| Value::from(v.as_str())).collect(),
        OptionType::NullOr { of } => {
            let mut values = alternatives(of);
            if !values.is_empty() {
                values.push(Value::Null);
            }
            values
        }
        _ => Vec::new(),
    }
}

/// A spec built from a VM's literals, and the paths in it that are not the user's literals.
type Built = (RunnerSpec, BTreeSet<JsonPath>);

fn capability_conflicts(
    file: usize,
    facts: &Facts,
    context: &SpecContext,
    (spec, not_literal): &Built,
) -> Vec<Finding> {
    let hypervisor_path = absolute(&path!["hypervisor"]);
    let Some((Value::String(name), hypervisor_span)) = literal(facts, &hypervisor_path) else {
        return Vec::new();
    };
    let Some(hypervisor) = Hypervisor::from_name(name) else {
        return Vec::new();
    };
    // The literal is in the spec; the refusals are for its hypervisor.
    if spec.hypervisor != hypervisor {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for refusal in capabilities::refusals(spec) {
        let (id, use_path) = (refusal.feature, &refusal.path);
        let full = absolute(use_path);
        if not_literal.contains(use_path) || !is_usable(facts, &full) {
            continue;
        }
        // A sibling choice that is not a literal: report only if every value it could take
        // still uses the feature.
        let parent = full.parent();
        let undecided = facts
            .unknown
            .iter()
            .filter(|(path, _)| path.parent() == parent);
        let mut certain = true;
        'siblings: for (path, ty) in undecided {
            for alternative in alternatives(ty) {
                let uses = context
                    .spec(context.json(facts, Some((path, &alternative))))
                    .map(|(spec, _)| capabilities::feature_uses(&spec))
                    .unwrap_or_default();
                if !uses.iter().any(|(i, p)| *i == id && p == use_path) {
                    certain = false;
                    break 'siblings;
                }
            }
        }
        if !certain {
            continue;
        }
        let Some(span) = span_for(facts, &full) else {
            continue;
        };
        let apart = hypervisor_span.start >= span.end || hypervisor_span.end <= span.start;
        let mut finding =
            Finding::error(&refusal.code, refusal.message, file, span).label(refusal.label);
        if apart {
            finding = finding.related(
                hypervisor_span.clone(),
                format!("the hypervisor is {hypervisor}"),
            );
        }
        if let Some(help) = refusal.help {
            finding = finding.help(help);
        }
        findings.push(finding);
    }
    findings
}

/// Duplicates by the generator's rules, among values whose every part is certain.
fn duplicates(file: usize, facts: &Facts, (spec, not_literal): &Built) -> Vec<Finding> {
    let certain = |path: &JsonPath| {
        let full = absolute(path);
        path.ancestors().all(|p| !not_literal.contains(&p))
            && full
                .ancestors()
                .all(|p| !facts.unknown.contains_key(&p) && !facts.conflicted.contains(&p))
    };
    let values = unique::values(spec)
        .into_iter()
        .filter(|value| value.from.iter().all(certain));
    let mut findings = Vec::new();
    for duplicate in unique::duplicates(values) {
        let (Some(span), Some(first)) = (
            span_for(facts, &absolute(&duplicate.path)),
            span_for(facts, &absolute(&duplicate.first)),
        ) else {
            continue;
        };
        findings.push(
            Finding::error(codes::DUPLICATE, duplicate.message, file, span)
                .label("used again here")
                .related(first, "first used here")
                .help(duplicate.rule.help),
        );
    }
    findings
}

/// The guests of one host's `microvm.vms` need distinct vsock context ids.
fn duplicate_cids(file: usize, guests: &[&Scope]) -> Vec<Finding> {
    let cid_path = absolute(&path!["vsock", "cid"]);
    let mut seen: BTreeMap<i64, Span> = BTreeMap::new();
    let mut findings = Vec::new();
    for scope in guests {
        let Some((Value::Number(cid), span)) = literal(&scope.facts, &cid_path) else {
            continue;
        };
        let Some(cid) = cid.as_i64() else { continue };
        match seen.get(&cid) {
            Some(first) => findings.push(
                Finding::error(
                    codes::DUPLICATE,
                    format!("two VMs use the vsock cid {cid}"),
                    file,
                    span.clone(),
                )
                .label("used again here")
                .related(first.clone(), "first used here")
                .help("give every VM on a host its own microvm.vsock.cid"),
            ),
            None => {
                seen.insert(cid, span.clone());
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_fills_lists_in_order_and_refuses_gaps() {
        let mut root = Value::Object(Map::new());
        insert(&mut root, &path!["a", 0, "x"].0, Value::from(1));
        insert(&mut root, &path!["a", 1, "x"].0, Value::from(2));
        insert(&mut root, &path!["a", usize::MAX, "x"].0, Value::from(3));
        insert(&mut root, &path!["a", 3].0, Value::from(4));
        assert_eq!(root, serde_json::json!({ "a": [{ "x": 1 }, { "x": 2 }] }));
    }
}
