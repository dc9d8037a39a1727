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

/// The address space the generator may use on the inputs below: far more than it needs, far
/// less than an unbounded allocation takes, so one fails the test instead of the machine.
const ADDRESS_SPACE_BYTES: u64 = 512 << 20;

/// Runs `microvm-codegen` with `args` under a bound on its address space (`prlimit --as`) and
/// a timeout (a read that never ends must not hang the test): its exit code and stderr.
fn run_bounded(args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new("timeout")
        .arg("120")
        .arg("prlimit")
        .arg(format!("--as={ADDRESS_SPACE_BYTES}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_microvm-codegen"))
        .args(args)
        .output()
        .expect("timeout and prlimit (coreutils, util-linux) are installed");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Issue 9 (3): arrays nested 10,000 deep took 1.2 GB (a path stored per level, per node), and
/// 32,000 deep overflowed the stack and aborted. serde_json refuses more than 128 levels; the
/// refusal says so with its own code, and the span index stops at the same depth.
#[test]
fn deeply_nested_specs_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    for depth in [10_000, 32_000] {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        exercise(&text);
        let findings = common::check(&SpecText::new("deep.json", text.as_str())).1;
        assert_eq!(
            findings.iter().map(|d| d.code.as_str()).collect::<Vec<_>>(),
            ["microvm::spec::too_deep"],
            "depth {depth}"
        );

        let path = dir.path().join(format!("deep-{depth}.json"));
        std::fs::write(&path, &text).unwrap();
        let (code, stderr) = run_bounded(&["validate", "--spec", path.to_str().unwrap()]);
        assert_eq!(code, Some(1), "depth {depth}: {stderr}");
        assert!(
            stderr.contains("microvm::spec::too_deep")
                && stderr.contains("the spec nests deeper than 128 levels"),
            "depth {depth}: {stderr}"
        );
    }
}

/// Issue 9 (3): `validate --spec /dev/zero` grew its buffer to 5.8 GB, and `lint /dev/zero`
/// too. Every file read is bounded: both refuse with a size error and the usage exit status.
#[test]
fn endless_input_files_are_refused_by_size() {
    for (args, code) in [
        (
            &["validate", "--spec", "/dev/zero"][..],
            "microvm::spec::too_large",
        ),
        (
            &[
                "generate",
                "--spec",
                "/dev/zero",
                "--out",
                "/nonexistent/out",
            ][..],
            "microvm::spec::too_large",
        ),
        (&["lint", "/dev/zero"][..], "microvm::nix::too_large"),
    ] {
        let (status, stderr) = run_bounded(args);
        assert_eq!(status, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(code) && stderr.contains("MiB"),
            "{args:?}: {stderr}"
        );
    }
}
