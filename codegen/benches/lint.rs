//! `cargo bench --bench lint`: how long `lint` takes on a generated 2,000-line host
//! configuration (about forty declared VMs in several nesting forms, each with an unknown
//! option, some with a capability conflict), in process and as a command; then how its time
//! grows: each family of adversarial inputs linted at size N and 2N in one run, and the ratio
//! of the two times (near-linear is about 2; more than 2.3 per doubling is flagged). Prints
//! only under `--bench`.
//!
//! `LINT_BENCH_CASE=<family>:<size>` (e.g. `apply-chain:50000`) lints one input once and
//! exits, for a profiler.

mod common;

use std::fmt::Write;
use std::process::Command;
use std::time::Instant;

use common::time;

use microvm_codegen::lint;
use microvm_codegen::options::{self, Source};

/// A host with `n` declared VMs of about 50 lines each.
fn host_config(lines_wanted: usize) -> String {
    let mut out = String::from(
        "{ config, lib, pkgs, ... }:\nlet\n  shared = \"/srv/shared\";\nin\n{\n  microvm.host.startupTimeout = 120;\n  microvm.vms = {\n",
    );
    let mut i = 0;
    while out.lines().count() < lines_wanted - 3 {
        let hypervisor = ["qemu", "cloud-hypervisor", "firecracker", "crosvm"][i % 4];
        let _ = write!(
            out,
            r#"    vm{i} = {{
      autostart = {autostart};
      config =
        {{ lib, ... }}:
        {{
          networking.hostName = "vm{i}";
          microvm = {{
            hypervisor = "{hypervisor}";
            vcpu = {vcpu};
            mem = lib.mkDefault {mem};
            vsock.cid = {cid};
            volumes = [
              {{
                image = "vm{i}-var.img";
                mountPoint = "/var";
                size = 1024;
              }}
              {{
                image = "vm{i}-data.img";
                mountPoint = "/data";
                size = 4096;
                readOnly = {read_only};
              }}
            ];
            interfaces = [
              {{
                type = "tap";
                id = "vm{i}-tap";
                mac = "02:00:00:00:{hi:02x}:{lo:02x}";
              }}
            ];
            shares = lib.optional (config.networking.hostName != "") {{
              tag = "shared";
              source = shared;
              mountPoint = "/shared";
            }};
          }};
          microvm.kernelParams = [ "console=ttyS0" "quiet" ];
          microvm.balloon = {balloon};
          microvm.hotplugMem = {hotplug};
          microvm.preStart = ''
            echo starting vm{i}
          '';
          microvm.memory = 512;
        }};
    }};
"#,
            autostart = i % 2 == 0,
            vcpu = 1 + i % 4,
            mem = 512 * (1 + i % 3),
            cid = 3 + i,
            read_only = i % 3 == 0,
            hi = i / 256,
            lo = i % 256,
            balloon = hypervisor != "firecracker",
            // Every other firecracker VM asks for virtio-mem, which firecracker lacks.
            hotplug = if i % 8 == 2 { 1024 } else { 0 },
        );
        i += 1;
    }
    out.push_str("  };\n}\n");
    out
}

/// `{ … }: { microvm.unknownOption<i> = <i>; … }`: `n` options that do not exist, every
/// tenth a near miss (`microvm.vcpus`) that gets a "did you mean".
fn unknown_options(n: usize) -> String {
    let mut out = String::from("{ ... }:\n{\n");
    for i in 0..n {
        if i % 10 == 0 {
            let _ = writeln!(out, "  microvm.vcpus{i} = {i};");
        } else {
            let _ = writeln!(out, "  microvm.unknownOption{i} = {i};");
        }
    }
    out.push_str("}\n");
    out
}

/// `microvm.mem = f x x …` with `n` arguments.
fn apply_chain(n: usize) -> String {
    format!("{{ ... }}:\n{{\n  microvm.mem = f{};\n}}\n", " x".repeat(n))
}

/// `microvm.mem = x.a.a…` with `n` attribute names.
fn select_chain(n: usize) -> String {
    format!("{{ ... }}:\n{{\n  microvm.mem = x{};\n}}\n", ".a".repeat(n))
}

/// `microvm.preStart = "…"` and `microvm.hypervisor = "…"` (no such hypervisor: a finding
/// with "did you mean"), string literals of `n / 2` bytes each.
fn long_string(n: usize) -> String {
    let text = "echo starting\\n".repeat(n / 30 + 1);
    let text = text[..n / 2].trim_end_matches('\\');
    format!(
        "{{ ... }}:\n{{\n  microvm.preStart = \"{text}\";\n  microvm.hypervisor = \"{text}\";\n}}\n"
    )
}

/// `microvm.vcpu = - - … 1` with `n` unary minus signs.
fn negations(n: usize) -> String {
    format!(
        "{{ ... }}:\n{{\n  microvm.vcpu = {}1;\n}}\n",
        "- ".repeat(n)
    )
}

/// A host configuration of about `bytes` bytes: many declared VMs, as in [`host_config`].
fn big_host(bytes: usize) -> String {
    let vm = host_config(60);
    let body_start = vm.find("    vm0 = {").expect("a VM");
    let body_end = vm.rfind("  };\n}\n").expect("the end");
    let (head, one_vm) = (&vm[..body_start], &vm[body_start..body_end]);
    let mut out = String::from(head);
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&one_vm.replace("vm0", &format!("vm{i}")));
        i += 1;
    }
    out.push_str("  };\n}\n");
    out
}

/// Each family of inputs, with the size N it is measured at (and 2N).
type Family = (&'static str, fn(usize) -> String, usize);

const FAMILIES: [Family; 6] = [
    ("unknown-options", unknown_options, 10_000),
    ("apply-chain", apply_chain, 500_000),
    ("select-chain", select_chain, 2_000_000),
    ("string-literal", long_string, 10 << 20),
    ("negations", negations, 500_000),
    ("big-host", big_host, 10 << 20),
];

/// Lints `text` and renders the findings both ways, as `microvm-codegen lint` does.
fn lint_text(text: String) -> usize {
    let files = vec![Source {
        name: "input.nix".to_owned(),
        path: "input.nix".into(),
        text,
    }];
    let findings = lint::lint(&files, options::reference());
    let printed =
        lint::render_plain(&findings, &files, 100).len() + lint::json(&findings, &files).len();
    assert!(findings.is_empty() || printed > 0);
    findings.len()
}

/// Timed runs of each size of each family.
const RUNS: usize = 7;

/// Lints each family at N and 2N and prints the time ratio.
fn scaling() {
    println!("lint time per doubling of the input (goal: ratio <= 2.3):");
    let mut worst: f64 = 0.0;
    for (name, generate, n) in FAMILIES {
        let (small, large) = (generate(n), generate(2 * n));
        let (small_len, large_len) = (small.len(), large.len());
        // Alternated, so that a change of load on the machine falls on both sizes alike.
        let mut findings = (0, 0);
        let (mut smalls, mut larges) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let (small, large) = (small.clone(), large.clone());
            let start = Instant::now();
            findings.0 = lint_text(small);
            smalls.push(start.elapsed());
            let start = Instant::now();
            findings.1 = lint_text(large);
            larges.push(start.elapsed());
        }
        smalls.sort();
        larges.sort();
        let (t_small, t_large) = (smalls[RUNS / 2], larges[RUNS / 2]);
        let ratio = t_large.as_secs_f64() / t_small.as_secs_f64();
        worst = worst.max(ratio);
        println!(
            "  {name:<16} N={n:<9} {t_small:>10.2?} ({small_len} bytes, {} findings)  2N {t_large:>10.2?} ({large_len} bytes, {} findings)  ratio {ratio:.2}{}",
            findings.0,
            findings.1,
            if ratio > 2.3 { "  > 2.3" } else { "" }
        );
    }
    println!("  worst ratio: {worst:.2}");
}

fn main() {
    if let Ok(case) = std::env::var("LINT_BENCH_CASE") {
        let (name, size) = case
            .split_once(':')
            .expect("LINT_BENCH_CASE=<family>:<size>");
        let size: usize = size.parse().expect("a size");
        let (_, generate, _) = FAMILIES
            .iter()
            .find(|(family, _, _)| *family == name)
            .expect("a family of FAMILIES");
        let start = Instant::now();
        let findings = lint_text(generate(size));
        println!(
            "{name} at {size}: {findings} findings in {:?}",
            start.elapsed()
        );
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench`");
        return;
    }
    let text = host_config(2000);
    let lines = text.lines().count();
    let files = vec![Source {
        name: "host.nix".to_owned(),
        path: "host.nix".into(),
        text: text.clone(),
    }];
    let reference = options::reference();
    let mut findings = 0;
    let in_process = time(50, || {
        findings = lint::lint(&files, reference).len();
    });
    let parse_only = time(50, || {
        assert!(microvm_codegen::nix_syntax::parse(&text).root.is_some());
    });

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.nix");
    std::fs::write(&path, &text).unwrap();
    let exe = env!("CARGO_BIN_EXE_microvm-codegen");
    let command = time(20, || {
        let output = Command::new(exe).arg("lint").arg(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "the fixture has mistakes");
    });

    println!("lint, generated host configuration ({lines} lines, {findings} findings):");
    println!("  in process (parse + walk + checks): {in_process:?} median");
    println!(
        "    = {:.1} x parsing the same file with rnix ({parse_only:?})",
        in_process.as_secs_f64() / parse_only.as_secs_f64()
    );
    println!("  `microvm-codegen lint` as a process, reports printed: {command:?} median");
    scaling();
}
