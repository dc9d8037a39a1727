//! `cargo bench --bench lint`: how long `lint` takes on a generated 2,000-line host
//! configuration (about forty declared VMs in several nesting forms, each with an unknown
//! option, some with a capability conflict), in process and as a command. Prints only under
//! `--bench`.

mod common;

use std::fmt::Write;
use std::process::Command;

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

fn main() {
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
}
