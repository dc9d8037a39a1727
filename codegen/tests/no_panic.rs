//! The generator never panics, whatever it is given: arbitrary text, and accepted specs with
//! values swapped for arbitrary JSON at arbitrary places. Every input ends in a spec (which
//! then renders) or in diagnostics (which then render as reports).

mod common;

use microvm_codegen::diagnostic::{self, SpecText};
use proptest::prelude::*;
use serde_json::Value;

fn exercise(text: &str) {
    let text = SpecText::new("input.json", text);
    let (spec, findings) = common::check(&text);
    let _ = diagnostic::render_plain(&findings, &text, 80);
    if let Some(spec) = spec
        && findings.iter().all(|d| !d.is_error())
    {
        common::build(&spec);
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("9p"),
            Just("virtiofs"),
            Just("tap"),
            Just("user"),
            Just("macvtap"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path into a JSON value, as keys and indices.
fn paths(value: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let mut p = prefix.clone();
                p.push(k.clone());
                paths(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(i.to_string());
                paths(v, p, out);
            }
        }
        _ => {}
    }
}

fn replace_at(value: &mut Value, path: &[String], with: Value) {
    match path.split_first() {
        None => *value = with,
        Some((head, rest)) => {
            let child = match value {
                Value::Object(map) => map.get_mut(head),
                Value::Array(items) => head.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                _ => None,
            };
            if let Some(child) = child {
                replace_at(child, rest, with);
            }
        }
    }
}

fn accepted_fixtures() -> Vec<Value> {
    let mut specs = Vec::new();
    for entry in std::fs::read_dir(common::fixtures().join("ok")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        specs.push(serde_json::from_str(&text).unwrap());
    }
    specs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        exercise(&text);
    }

    #[test]
    fn mutated_specs_never_panic(
        which in any::<prop::sample::Index>(),
        where_ in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        replacements in proptest::collection::vec(arbitrary_json(), 1..4),
        pretty in any::<bool>(),
    ) {
        let specs = accepted_fixtures();
        let mut spec = specs[which.index(specs.len())].clone();
        for (place, replacement) in where_.iter().zip(replacements) {
            let mut all = Vec::new();
            paths(&spec, Vec::new(), &mut all);
            let path = all[place.index(all.len())].clone();
            replace_at(&mut spec, &path, replacement);
        }
        let text = if pretty {
            serde_json::to_string_pretty(&spec).unwrap()
        } else {
            spec.to_string()
        };
        exercise(&text);
    }
}

#[test]
fn extreme_numbers_never_panic() {
    for base in accepted_fixtures() {
        for (field, value) in [
            ("mem", Value::from(u64::MAX)),
            ("hotplugMem", Value::from(u64::MAX)),
            ("hotpluggedMem", Value::from(u64::MAX)),
            ("initialBalloonMem", Value::from(u64::MAX)),
            ("vcpu", Value::from(u32::MAX)),
        ] {
            let mut spec = base.clone();
            spec[field] = value;
            exercise(&spec.to_string());
            spec["mem"] = Value::from(u64::MAX);
            exercise(&spec.to_string());
        }
    }
}
