//! The guest's side of `microvm up` (issue 11): nixos-modules/microvm/up-announcements.sh,
//! run on a stand-in kernel command line by each shell it must work under (dash as `sh`, bash as
//! NixOS runs it, busybox sh as the test guest runs it), in a dry run: the mount commands it
//! would run, the env file it writes, what it refuses, and that a plain boot does nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHELLS: [&[&str]; 3] = [&["sh"], &["bash"], &["busybox", "sh"]];

/// `GREETING="hello from up"` and `QUOTED="say \"hi\" \\ $HOME"`, one a line, in standard
/// base64 as `microvm up --env` announces them.
const ENV_BASE64: &str = "R1JFRVRJTkc9ImhlbGxvIGZyb20gdXAiClFVT1RFRD0ic2F5IFwiaGlcIiBcXCAkSE9NRSIK";
const ENV_TEXT: &str = "GREETING=\"hello from up\"\nQUOTED=\"say \\\"hi\\\" \\\\ $HOME\"\n";

fn script() -> PathBuf {
    common::repo_root().join("nixos-modules/microvm/up-announcements.sh")
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    run_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn dry_runs(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("microvm-up: dry run: "))
            .collect()
    }
}

/// Runs the script with `shell` on `cmdline`, as a dry run, with /sys/block replaced by
/// `disks` (each vdX and its serial).
fn run(shell: &[&str], cmdline: &str, disks: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cmdline_file = dir.path().join("cmdline");
    std::fs::write(&cmdline_file, format!("{cmdline}\n")).unwrap();
    let sys_block = dir.path().join("sys/block");
    std::fs::create_dir_all(&sys_block).unwrap();
    for (disk, serial) in disks {
        std::fs::create_dir_all(sys_block.join(disk)).unwrap();
        std::fs::write(sys_block.join(disk).join("serial"), serial).unwrap();
    }
    // Two interfaces, as a guest with its own network and `up`'s tap has.
    for (interface, mac) in [("eth0", "02:00:00:00:00:01"), ("eth1", "02:aa:bb:cc:dd:ee")] {
        let dir = dir.path().join("sys/class/net").join(interface);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
    }
    let run_dir = dir.path().join("run/microvm");
    let output = Command::new(shell[0])
        .args(&shell[1..])
        .arg(script())
        .arg(&cmdline_file)
        .env("MICROVM_UP_DRY_RUN", "1")
        .env("MICROVM_UP_RUN_DIR", &run_dir)
        .env("MICROVM_UP_SYS_BLOCK", &sys_block)
        .env("MICROVM_UP_SYS_NET", dir.path().join("sys/class/net"))
        .output()
        .unwrap_or_else(|e| panic!("{shell:?} runs: {e}"));
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        run_dir,
        _dir: dir,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn require_shells() {
    common::require("bash", "bash");
    common::require("busybox", "busybox-static");
}

#[test]
fn each_announcement_becomes_its_mount_and_the_env_file() {
    require_shells();
    let cmdline = format!(
        "console=ttyS0 microvm.up.mount=9p:up0:/mnt/x microvm.up.mount=virtiofs:fs0:/srv//a/./b/ \
         \"microvm.up.mount=disk:up1:/mnt/y\" microvm.up.env={ENV_BASE64} init=/init -- x"
    );
    for shell in SHELLS {
        let run = run(shell, &cmdline, &[("vda", "store"), ("vdb", "up1")]);
        assert!(run.ok, "{shell:?}: {}\n{}", run.stdout, run.stderr);
        assert_eq!(
            run.dry_runs(),
            [
                "mkdir -p /mnt/x",
                "mount -t 9p -o trans=virtio,version=9p2000.L,msize=65536,ro up0 /mnt/x",
                "mkdir -p /srv/a/b",
                "mount -t virtiofs -o ro fs0 /srv/a/b",
                "mkdir -p /mnt/y",
                "mount -t ext4 -o rw /dev/vdb /mnt/y",
            ],
            "{shell:?}"
        );
        let reports: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| !l.contains("dry run"))
            .collect();
        let env = run.run_dir.join("env");
        assert_eq!(
            reports,
            [
                "microvm-up: mounted 9p up0 on /mnt/x (ro)".to_owned(),
                "microvm-up: mounted virtiofs fs0 on /srv/a/b (ro)".to_owned(),
                "microvm-up: mounted disk up1 (/dev/vdb) on /mnt/y (rw)".to_owned(),
                format!("microvm-up: wrote {} (2 variables)", env.display()),
            ],
            "{shell:?}"
        );
        assert_eq!(run.stderr, "", "{shell:?}");
        assert_eq!(
            std::fs::read_to_string(&env).unwrap(),
            ENV_TEXT,
            "{shell:?}"
        );
        assert_eq!(mode(&env), 0o600, "{shell:?}");
        assert_eq!(mode(&run.run_dir), 0o755, "{shell:?}");
    }
}

/// The guest sees the first 20 bytes of a serial; without a disk of that serial the label
/// names it.
#[test]
fn a_disk_is_found_by_its_serial_or_else_by_its_label() {
    require_shells();
    let long = "a-volume-id-longer-than-twenty";
    for shell in SHELLS {
        let run = run(
            shell,
            &format!("microvm.up.mount=disk:{long}:/data microvm.up.mount=disk:data2:/data2"),
            &[("vda", "store"), ("vdc", &long[..20]), ("vdd", "data")],
        );
        assert!(run.ok, "{shell:?}: {}", run.stderr);
        assert_eq!(
            run.dry_runs(),
            [
                "mkdir -p /data",
                "mount -t ext4 -o rw /dev/vdc /data",
                "mkdir -p /data2",
                "mount -t ext4 -o rw LABEL=data2 /data2",
            ],
            "{shell:?}"
        );
    }
}

/// What the host refuses, the guest refuses too, says why, and still does the rest.
#[test]
fn bad_announcements_are_refused_and_the_rest_is_done() {
    require_shells();
    let refused = [
        (
            "microvm.up.mount=9p:t1:/mnt/../etc",
            "refusing the guest path \"/mnt/../etc\"",
        ),
        (
            "microvm.up.mount=9p:t2:/mnt/..",
            "refusing the guest path \"/mnt/..\"",
        ),
        (
            "microvm.up.mount=9p:t3:relative",
            "refusing the guest path \"relative\"",
        ),
        (
            "microvm.up.mount=9p:t4:/mnt/a;b",
            "refusing the guest path \"/mnt/a;b\"",
        ),
        (
            "microvm.up.mount=9p:t5://",
            "refusing the guest path \"//\"",
        ),
        (
            "microvm.up.mount=9p:t6:/nix/store/x",
            "refusing the guest path \"/nix/store/x\"",
        ),
        ("microvm.up.mount=nfs:t7:/mnt/n", "unknown kind \"nfs\""),
        (
            "microvm.up.mount=9p:/mnt/n",
            "expected KIND:SOURCE:GUESTPATH",
        ),
        ("microvm.up.mount=9p:-oremount:/mnt/n", "begins with -"),
        ("microvm.up.mount=disk::/mnt/n", "is empty"),
        ("microvm.up.volume=x", "unknown parameter microvm.up.volume"),
        (
            "microvm.up.env=bm90IGFuIGFzc2lnbm1lbnQK",
            "not a KEY=\"value\" line: not an assignment",
        ),
        (
            "microvm.up.env=MUtFWT0ieCIK",
            "not a KEY=\"value\" line: 1KEY=\"x\"",
        ),
        ("microvm.up.env=@@@", "microvm.up.env: not base64"),
    ];
    for shell in SHELLS {
        for (param, why) in refused {
            let run = run(
                shell,
                &format!("{param} microvm.up.mount=9p:good:/mnt/good"),
                &[],
            );
            assert!(!run.ok, "{shell:?} accepted {param}");
            assert!(
                run.stderr.contains(why) && run.stderr.lines().count() == 1,
                "{shell:?} on {param}: {}",
                run.stderr
            );
            assert_eq!(
                run.dry_runs(),
                [
                    "mkdir -p /mnt/good",
                    "mount -t 9p -o trans=virtio,version=9p2000.L,msize=65536,ro good /mnt/good",
                ],
                "{shell:?} on {param}"
            );
            assert!(
                !run.run_dir.exists(),
                "{shell:?} on {param}: wrote the env file"
            );
        }
    }
}

#[test]
fn the_proxys_network_goes_to_the_interface_with_its_mac() {
    require_shells();
    let cmdline = "microvm.up.net=02:aa:bb:cc:dd:ee,100.64.1.2/30,100.64.1.1 \
                   microvm.up.net=02:aa:bb:cc:dd:ef,10.0.0.2/30,10.0.0.1 \
                   microvm.up.net=nomac,1/2,3 microvm.up.net=02:aa:bb:cc:dd:ee,1.2.3.4,1.1.1.1";
    for shell in SHELLS {
        let run = run(shell, cmdline, &[]);
        assert!(!run.ok, "{shell:?}: refusals fail the run");
        assert_eq!(
            run.dry_runs(),
            [
                "ip address replace 100.64.1.2/30 dev eth1",
                "ip link set dev eth1 up"
            ],
            "{shell:?}"
        );
        assert!(
            run.stdout.contains(
                "microvm-up: gave eth1 the address 100.64.1.2/30 (the host is 100.64.1.1)"
            ),
            "{shell:?}: {}",
            run.stdout
        );
        for refusal in [
            "no interface has the address 02:aa:bb:cc:dd:ef",
            "\"nomac\" is not a MAC address",
            "02:aa:bb:cc:dd:ee,1.2.3.4,1.1.1.1: expected MAC,ADDRESS/PREFIX,HOST",
        ] {
            assert!(
                run.stderr.contains(refusal),
                "{shell:?}: {refusal}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_plain_boot_does_nothing() {
    require_shells();
    for shell in SHELLS {
        let run = run(
            shell,
            "console=ttyS0 microvm.up=1 microvm.upper=2 init=/nix/store/x/init mvtest=up",
            &[("vda", "up1")],
        );
        assert!(run.ok, "{shell:?}: {}", run.stderr);
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str()),
            ("", ""),
            "{shell:?}"
        );
        assert!(!run.run_dir.exists(), "{shell:?}");
    }
}
