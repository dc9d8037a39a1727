//! Values with shell metacharacters arrive unchanged. A property test puts strings with spaces,
//! quotes, `$()`, backticks, globs, newlines, commas and non-ASCII into every string field that
//! reaches `microvm-run`, runs the generated script with the hypervisor replaced by a stub that
//! records its arguments, and parses the recorded command line back.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use serde_json::json;

/// Splits a qemu option string (`head,key=value,…` with `,,` for a literal comma).
fn qemu_opts(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().unwrap().push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    parts
}

fn opt(parts: &[String], key: &str) -> Option<String> {
    parts
        .iter()
        .find_map(|p| p.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// The option strings following `flag` in `argv`.
fn values<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

/// The parsed option string after `flag` whose options contain `key=value`.
fn find(argv: &[String], flag: &str, key: &str, value: &str) -> Vec<String> {
    values(argv, flag)
        .into_iter()
        .map(qemu_opts)
        .find(|parts| opt(parts, key).as_deref() == Some(value))
        .unwrap_or_else(|| panic!("no {flag} with {key}={value} in {argv:?}"))
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(program: &str) -> String {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return path.display().to_string();
        }
    }
    panic!("{program} not found")
}

/// Characters that break naive quoting, plus ordinary ones.
fn nasty(max: usize) -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = " \"'$()`*?[]{}\n\t\\,=;&|<>~#!%^éü日本ab-_.:"
        .chars()
        .collect();
    proptest::collection::vec(proptest::sample::select(alphabet), 1..max)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Cuts `s` to at most `max` bytes on a character boundary (labels and tags count bytes).
fn fit(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    if s.is_empty() { "x".to_owned() } else { s }
}

/// Like `nasty`, a file name (tags, credential names): no `/`, and not `.` or `..`, which
/// validation rightly refuses as names.
fn nasty_name(max: usize) -> impl Strategy<Value = String> {
    nasty(max).prop_map(|s| match s.replace('/', "_") {
        dots if dots == "." || dots == ".." => format!("{dots}x"),
        name => name,
    })
}

/// A systemd credential name: validation takes letters, digits and `. _ - @ +` only (the
/// separators of the ways credentials are passed are refused), so no metacharacter reaches qemu.
fn credential_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._@+-]{1,16}".prop_map(|name| match name.as_str() {
        "." | ".." => format!("{name}x"),
        _ => name,
    })
}

#[derive(Debug, Clone)]
struct Values {
    host_name: String,
    kernel: String,
    initrd: String,
    params: Vec<String>,
    store: String,
    image: String,
    serial: String,
    label: String,
    mkfs_arg: String,
    source: String,
    tag: String,
    credential: String,
    credential_file: String,
    cpu: String,
    netdev: String,
    extra: Vec<String>,
}

fn values_strategy() -> impl Strategy<Value = Values> {
    (
        (
            nasty(20),
            nasty(30),
            nasty(30),
            proptest::collection::vec(nasty(12), 0..4),
        ),
        (
            nasty(30),
            nasty_name(20),
            nasty(16),
            nasty_name(12),
            nasty(12),
        ),
        (nasty(30), nasty_name(20), credential_name(), nasty(30)),
        (
            nasty(12),
            nasty(12),
            proptest::collection::vec(nasty(12), 0..3),
        ),
    )
        .prop_map(
            |(
                (host_name, kernel, initrd, params),
                (store, image, serial, label, mkfs_arg),
                (source, tag, credential, credential_file),
                (cpu, netdev, extra),
            )| Values {
                host_name,
                kernel,
                initrd,
                params,
                store,
                image: format!("img-{image}"),
                serial: fit(serial, 20),
                label: fit(label, 16),
                mkfs_arg,
                source,
                tag: fit(tag, 31),
                credential,
                credential_file,
                cpu,
                netdev,
                extra,
            },
        )
}

fn spec_for(v: &Values, stubs: &Path) -> serde_json::Value {
    json!({
        "specVersion": 1,
        "hostName": v.host_name,
        "hypervisor": "qemu",
        "cpu": v.cpu,
        "kernel": v.kernel,
        "initrdPath": v.initrd,
        "kernelParams": v.params,
        "storeDisk": v.store,
        "volumes": [{
            "image": v.image,
            "serial": v.serial,
            "label": v.label,
            "size": 8,
            "mkfsExtraArgs": [v.mkfs_arg],
        }],
        "shares": [{ "tag": v.tag, "source": v.source, "mountPoint": "/mnt" }],
        "credentialFiles": { v.credential.clone(): v.credential_file },
        "interfaces": [{ "type": "user", "id": v.netdev, "mac": "02:00:00:00:00:01" }],
        "qemu": { "extraArgs": v.extra },
        "tools": {
            "bash": which("bash"),
            "qemu": stubs.join("qemu").display().to_string(),
            "mkfs.ext4": stubs.join("mkfs").display().to_string(),
            "mkdir": which("mkdir"),
            "ln": which("ln"),
            "rm": which("rm"),
            "truncate": which("truncate"),
        }
    })
}

fn read_nul_separated(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut words: Vec<String> = bytes
        .split(|b| *b == 0)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    assert_eq!(words.pop().as_deref(), Some(""), "records end with NUL");
    words
}

fn run_case(v: &Values) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("stubs");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let record = "#!/bin/bash\nprintf '%s\\0' \"$@\" > \"$RECORD_DIR/$(basename \"$0\").argv\"\n";
    write_script(&stubs.join("qemu"), record);
    write_script(&stubs.join("mkfs"), record);

    let spec_json = spec_for(v, &stubs);
    let text = microvm_codegen::diagnostic::SpecText::new("prop.json", spec_json.to_string());
    let (spec, findings) = common::check(&text);
    prop_assert!(
        findings.iter().all(|d| !d.is_error()),
        "refused: {:?}",
        findings
    );
    let tree = common::build(&spec.unwrap());
    let runner = dir.path().join("runner");
    microvm_codegen::output::write(&runner, &tree, false).unwrap();

    let status = Command::new(runner.join("bin/microvm-run"))
        .current_dir(&work)
        .env("RECORD_DIR", &stubs)
        .status()
        .unwrap();
    prop_assert!(status.success());

    let argv = read_nul_separated(&stubs.join("qemu.argv"));
    prop_assert_eq!(
        opt(&qemu_opts(values(&argv, "-name")[0]), "guest"),
        Some(v.host_name.clone())
    );
    prop_assert_eq!(values(&argv, "-kernel"), vec![v.kernel.as_str()]);
    prop_assert_eq!(values(&argv, "-initrd"), vec![v.initrd.as_str()]);
    let mut cmdline = "console=ttyS0 reboot=t panic=-1".to_owned();
    for param in &v.params {
        cmdline.push(' ');
        cmdline.push_str(param);
    }
    prop_assert_eq!(values(&argv, "-append"), vec![cmdline.as_str()]);
    prop_assert_eq!(values(&argv, "-cpu"), vec![v.cpu.as_str()]);
    prop_assert_eq!(
        opt(&find(&argv, "-drive", "id", "store"), "file"),
        Some(v.store.clone())
    );
    prop_assert_eq!(
        opt(&find(&argv, "-drive", "id", "vol0"), "file"),
        Some(v.image.clone())
    );
    prop_assert_eq!(
        opt(&find(&argv, "-device", "drive", "vol0"), "serial"),
        Some(v.serial.clone())
    );
    prop_assert_eq!(
        opt(&find(&argv, "-fsdev", "id", "fs0"), "path"),
        Some(v.source.clone())
    );
    prop_assert_eq!(
        opt(&find(&argv, "-device", "fsdev", "fs0"), "mount_tag"),
        Some(v.tag.clone())
    );
    let name = format!("opt/io.systemd.credentials/{}", v.credential);
    prop_assert_eq!(
        opt(&find(&argv, "-fw_cfg", "name", &name), "file"),
        Some(v.credential_file.clone())
    );
    // The interface id is not a qemu id: the netdev gets one of its own.
    find(&argv, "-netdev", "id", "net0");
    find(&argv, "-device", "netdev", "net0");
    prop_assert_eq!(&argv[argv.len() - v.extra.len()..], v.extra.as_slice());

    let mkfs = read_nul_separated(&stubs.join("mkfs.argv"));
    let partial = format!("{}.microvm-partial", v.image);
    prop_assert_eq!(
        mkfs,
        vec![
            "-q".to_owned(),
            "-L".to_owned(),
            v.label.clone(),
            v.mkfs_arg.clone(),
            partial
        ]
    );
    prop_assert!(
        work.join(&v.image).is_file(),
        "the volume was created under its exact name"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_value_arrives_as_exactly_one_unchanged_argument(v in values_strategy()) {
        run_case(&v)?;
    }
}

/// Issue 9 (7): Linux refuses to exec a program when one argument is longer than MAX_ARG_STRLEN
/// (32 pages, the NUL included): a runner built with such an argument could never start. Any
/// word the runner would pass is checked, whether one value (an extra argument) or a value
/// joined from many (the kernel command line), and the report points at the value to shorten.
#[test]
fn an_argument_longer_than_max_arg_strlen_is_refused() {
    use microvm_codegen::validate::MAX_ARG_BYTES;

    // The limit is the kernel's: one byte more and exec fails.
    let longest = "x".repeat(MAX_ARG_BYTES);
    assert!(
        Command::new("/bin/true")
            .arg(&longest)
            .status()
            .unwrap()
            .success()
    );
    let error = Command::new("/bin/true")
        .arg(format!("{longest}x"))
        .status()
        .unwrap_err();
    assert_eq!(error.raw_os_error(), Some(7), "E2BIG: {error}");

    let base = json!({
        "specVersion": 1, "hostName": "long", "hypervisor": "qemu",
        "kernel": "/boot/vmlinuz", "initrdPath": "/boot/initrd",
        "tools": { "bash": "/bin/bash", "qemu": "/bin/qemu" }
    });
    let codes = |spec: &serde_json::Value| {
        let text = microvm_codegen::diagnostic::SpecText::new("long.json", spec.to_string());
        let findings = common::check(&text).1;
        findings
            .iter()
            .filter(|d| d.code == "microvm::validate::argument_too_long")
            .map(|d| d.path().map(ToString::to_string).unwrap_or_default())
            .collect::<Vec<_>>()
    };

    let mut spec = base.clone();
    spec["qemu"] = json!({ "extraArgs": [longest] });
    assert_eq!(codes(&spec), Vec::<String>::new(), "at the limit");
    spec["qemu"] = json!({ "extraArgs": ["-x", format!("{longest}x")] });
    assert_eq!(codes(&spec), ["$.qemu.extraArgs[1]"]);

    // Parameters of 1000 bytes each, joined into one -append word.
    let params: Vec<String> = (0..140)
        .map(|i| format!("p{i:03}={}", "y".repeat(995)))
        .collect();
    let mut spec = base.clone();
    spec["kernelParams"] = json!(params);
    let found = codes(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("$.kernelParams["), "{found:?}");
}
