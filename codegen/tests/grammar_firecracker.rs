//! firecracker's command line and config file, read back with a model of firecracker's grammar
//! and checked value by value against the spec; and the API scripts, run against a stub of
//! firecracker's API on a Unix socket.
//!
//! Command line after firecracker 1.16 / HEAD `src/firecracker/src/main.rs` (the `Argument`
//! list) and `src/utils/src/arg_parser.rs`: a flag and its value are two words (`--flag=value`
//! is an unknown argument), no flag may be given twice, `--no-api` needs `--config-file`.
//! Config file after `src/vmm/src/resources.rs` (`VmmConfig`, kebab-case top-level keys) and
//! `src/vmm/src/vmm_config/*.rs` (snake_case keys; `drives` and `is_root_device` and
//! `deflate_on_oom` required; unknown keys refused); API after
//! `src/firecracker/swagger/firecracker.yaml`, `docs/api_requests/actions.md` and
//! `docs/ballooning.md`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use microvm_codegen::runner::{Entry, Tree};
use microvm_codegen::spec::RunnerSpec;
use serde_json::{Value, json};

/// Flags that take a value, and switches (`main.rs`).
const VALUE_FLAGS: &[&str] = &[
    "--api-sock",
    "--id",
    "--seccomp-filter",
    "--start-time-us",
    "--start-time-cpu-us",
    "--parent-cpu-time-us",
    "--config-file",
    "--metadata",
    "--log-path",
    "--level",
    "--module",
    "--metrics-path",
    "--describe-snapshot",
    "--http-api-max-payload-size",
    "--mmds-size-limit",
];
const SWITCHES: &[&str] = &[
    "--no-seccomp",
    "--no-api",
    "--show-level",
    "--show-log-origin",
    "--boot-timer",
    "--version",
    "--snapshot-version",
    "--enable-pci",
];

/// Parses firecracker's argv (without the program) into flag -> value.
fn parse_argv(argv: &[String]) -> BTreeMap<String, Option<String>> {
    let mut flags = BTreeMap::new();
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        assert!(
            !word.contains('='),
            "firecracker has no --flag=value form: {word}"
        );
        let value = if VALUE_FLAGS.contains(&word.as_str()) {
            Some(
                words
                    .next()
                    .unwrap_or_else(|| panic!("{word} has no value"))
                    .clone(),
            )
        } else {
            assert!(SWITCHES.contains(&word.as_str()), "unknown argument {word}");
            None
        };
        assert!(
            flags.insert(word.clone(), value).is_none(),
            "{word} given twice"
        );
    }
    assert!(
        !flags.contains_key("--no-api") || flags.contains_key("--config-file"),
        "--no-api requires --config-file"
    );
    assert!(
        !(flags.contains_key("--no-api") && flags.contains_key("--api-sock")),
        "--no-api and --api-sock exclude each other"
    );
    flags
}

/// Allowed and required keys of each object of the config file.
fn object_keys(section: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match section {
        "" => (
            &[
                "balloon",
                "drives",
                "boot-source",
                "cpu-config",
                "logger",
                "machine-config",
                "metrics",
                "mmds-config",
                "network-interfaces",
                "vsock",
                "entropy",
                "pmem",
                "memory-hotplug",
            ],
            &["boot-source", "drives"],
        ),
        "boot-source" => (
            &["kernel_image_path", "initrd_path", "boot_args"],
            &["kernel_image_path"],
        ),
        "machine-config" => (
            &[
                "vcpu_count",
                "mem_size_mib",
                "smt",
                "cpu_template",
                "track_dirty_pages",
                "huge_pages",
            ],
            &["vcpu_count", "mem_size_mib"],
        ),
        "drives" => (
            &[
                "drive_id",
                "partuuid",
                "is_root_device",
                "cache_type",
                "is_read_only",
                "path_on_host",
                "rate_limiter",
                "io_engine",
                "socket",
            ],
            &["drive_id", "is_root_device"],
        ),
        "network-interfaces" => (
            &[
                "iface_id",
                "host_dev_name",
                "guest_mac",
                "mtu",
                "rx_rate_limiter",
                "tx_rate_limiter",
            ],
            &["iface_id", "host_dev_name"],
        ),
        "vsock" => (
            &["vsock_id", "guest_cid", "uds_path"],
            &["guest_cid", "uds_path"],
        ),
        "balloon" => (
            &[
                "amount_mib",
                "deflate_on_oom",
                "stats_polling_interval_s",
                "free_page_hinting",
                "free_page_reporting",
            ],
            &["amount_mib", "deflate_on_oom"],
        ),
        "entropy" => (&["rate_limiter"], &[]),
        "logger" => (
            &[
                "log_path",
                "level",
                "show_level",
                "show_log_origin",
                "module",
            ],
            &[],
        ),
        "mmds-config" => (
            &[
                "version",
                "network_interfaces",
                "ipv4_address",
                "imds_compat",
            ],
            &["network_interfaces"],
        ),
        "cpu-config" => (
            &[
                "kvm_capabilities",
                "cpuid_modifiers",
                "msr_modifiers",
                "vcpu_features",
                "reg_modifiers",
            ],
            &[],
        ),
        other => panic!("the model has no section {other}"),
    }
}

const BOOLEANS: &[&str] = &[
    "is_root_device",
    "is_read_only",
    "smt",
    "track_dirty_pages",
    "deflate_on_oom",
    "free_page_hinting",
    "free_page_reporting",
    "show_level",
    "show_log_origin",
    "imds_compat",
];

fn check_object(section: &str, value: &Value) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{section:?} is not an object"));
    let (allowed, required) = object_keys(section);
    for key in object.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{section:?}: unknown key {key}"
        );
    }
    for key in required {
        assert!(object.contains_key(*key), "{section:?}: {key} is required");
    }
    for (key, v) in object {
        if BOOLEANS.contains(&key.as_str()) {
            assert!(
                v.is_boolean(),
                "{section}.{key} must be a JSON boolean: {v}"
            );
        }
        match key.as_str() {
            "io_engine" => assert!(["Async", "Sync"].contains(&v.as_str().unwrap())),
            "huge_pages" => assert!(["None", "Transparent", "2M"].contains(&v.as_str().unwrap())),
            "vcpu_count" => assert!((1..=32).contains(&v.as_u64().unwrap())),
            "guest_cid" => assert!(v.as_u64().unwrap() >= 3),
            "amount_mib" | "mem_size_mib" | "stats_polling_interval_s" => {
                assert!(v.is_u64(), "{section}.{key} must be a whole number");
            }
            _ => {}
        }
    }
}

/// Reads the config file back with the model, failing on anything firecracker would refuse.
fn parse_config(text: &str) -> Value {
    let config: Value = serde_json::from_str(text).expect("the config file is JSON");
    check_object("", &config);
    for (section, value) in config.as_object().unwrap() {
        match section.as_str() {
            "drives" | "network-interfaces" => {
                for item in value.as_array().expect("a list") {
                    check_object(section, item);
                }
            }
            "pmem" | "memory-hotplug" | "metrics" => {}
            _ => check_object(section, value),
        }
    }
    config
}

fn file<'a>(tree: &'a Tree, path: &str) -> &'a str {
    match tree.get(path) {
        Some(Entry::File { contents, .. }) => contents,
        _ => panic!("no {path} in the runner"),
    }
}

/// The flags and the config file the command line points at.
fn read_back(tree: &Tree, spec: &RunnerSpec) -> (BTreeMap<String, Option<String>>, Value) {
    let argv = common::exec_argv(tree);
    assert_eq!(argv[0], spec.tools.firecracker.clone().unwrap());
    let flags = parse_argv(&argv[1..]);
    let config_path = flags["--config-file"].clone().unwrap();
    let relative = config_path
        .strip_prefix("${runner}/")
        .expect("the config file is the runner's own");
    (flags, parse_config(file(tree, relative)))
}

fn spec_from(fixture: &str, patch: Value) -> RunnerSpec {
    let text = std::fs::read_to_string(common::fixtures().join("ok").join(fixture)).unwrap();
    let mut spec: Value = serde_json::from_str(&text).unwrap();
    for (key, value) in patch.as_object().unwrap() {
        spec[key] = value.clone();
    }
    serde_json::from_value(spec).unwrap()
}

fn findings(spec: &RunnerSpec) -> Vec<microvm_codegen::diagnostic::Diagnostic> {
    microvm_codegen::validate::validate(spec)
}

#[test]
fn every_feature_command_line_and_config_match_the_grammar_and_the_spec() {
    let (spec, tree) = common::ok_fixture("firecracker-every-feature.json");
    let (flags, config) = read_back(&tree, &spec);
    assert_eq!(flags["--api-sock"], spec.socket.clone());
    assert_eq!(
        flags["--level"].as_deref(),
        Some("Warning"),
        "extraArgs arrive"
    );

    let boot = &config["boot-source"];
    assert_eq!(boot["kernel_image_path"], spec.kernel.as_str());
    assert_eq!(boot["initrd_path"], spec.initrd_path.as_str());
    let boot_args: Vec<&str> = boot["boot_args"].as_str().unwrap().split(' ').collect();
    for param in spec.kernel_params.iter().map(String::as_str).chain([
        "console=ttyS0",
        // Ctrl-Alt-Del reaches the guest through firecracker's i8042 only with these.
        "i8042.noaux",
        "i8042.nomux",
        "i8042.dumbkbd",
    ]) {
        assert!(
            boot_args.contains(&param),
            "{param} missing from {boot_args:?}"
        );
    }

    let machine = &config["machine-config"];
    assert_eq!(machine["vcpu_count"], spec.vcpu);
    assert_eq!(spec.vcpu % 2, 1, "the fixture has an odd vCPU count");
    assert!(
        machine.get("smt").is_none(),
        "smt is never set (odd counts and aarch64 refuse it)"
    );
    assert_eq!(machine["mem_size_mib"], spec.mem);
    assert_eq!(machine["huge_pages"], "2M");
    assert_eq!(
        machine["track_dirty_pages"], true,
        "extraConfig merges into the generated section"
    );

    let drives = config["drives"].as_array().unwrap();
    assert_eq!(drives.len(), 1 + spec.volumes.len());
    let engine = json!(spec.firecracker.drive_io_engine);
    assert_eq!(drives[0]["path_on_host"], spec.store_disk.clone().unwrap());
    assert_eq!(drives[0]["is_read_only"], true);
    for drive in drives {
        assert_eq!(
            drive["is_root_device"], false,
            "the guest boots from its initrd"
        );
        assert_eq!(drive["io_engine"], engine);
    }
    for (drive, volume) in drives[1..].iter().zip(&spec.volumes) {
        assert_eq!(drive["path_on_host"], volume.image.as_str());
        assert_eq!(drive["is_read_only"], volume.read_only);
    }
    let ids: Vec<&Value> = drives.iter().map(|d| &d["drive_id"]).collect();
    assert!(
        ids.iter().enumerate().all(|(i, id)| !ids[..i].contains(id)),
        "drive ids are unique: {ids:?}"
    );

    let nets = config["network-interfaces"].as_array().unwrap();
    assert_eq!(nets.len(), spec.interfaces.len());
    for (net, interface) in nets.iter().zip(&spec.interfaces) {
        assert_eq!(net["host_dev_name"], interface.id.as_str());
        assert_eq!(net["guest_mac"], interface.mac.as_str());
        let id = net["iface_id"].as_str().unwrap();
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{id}: the API accepts only [A-Za-z0-9_] ids"
        );
    }
    assert_eq!(
        config["mmds-config"], spec.firecracker.extra_config["mmds-config"],
        "extraConfig adds sections"
    );
    assert_eq!(config["logger"], spec.firecracker.extra_config["logger"]);

    assert_eq!(config["vsock"]["guest_cid"], spec.vsock.cid.unwrap());
    assert_eq!(config["vsock"]["uds_path"], "notify.vsock");
    assert!(
        file(&tree, "bin/microvm-run").contains(" -f -- notify.vsock\n"),
        "firecracker cannot bind over a stale vsock socket"
    );
    let balloon = &config["balloon"];
    assert_eq!(balloon["amount_mib"], spec.initial_balloon_mem);
    assert_eq!(balloon["deflate_on_oom"], spec.deflate_on_oom);
    assert!(
        balloon["stats_polling_interval_s"].as_u64().unwrap() >= 1,
        "microvm-balloon reads the statistics"
    );
    assert_eq!(config["entropy"], json!({}));
    assert_eq!(Some(&config["cpu-config"]), spec.firecracker.cpu.as_ref());

    assert!(tree.contains_key("bin/microvm-shutdown"));
    assert!(tree.contains_key("bin/microvm-balloon"));
}

#[test]
fn minimal_command_line_and_config_match_the_grammar() {
    let (spec, tree) = common::ok_fixture("firecracker-minimal.json");
    let (flags, config) = read_back(&tree, &spec);
    assert_eq!(flags["--api-sock"], spec.socket.clone());
    assert!(
        !flags.contains_key("--enable-pci"),
        "the spec does not know whether firecracker is 1.13 or later"
    );
    assert_eq!(config["drives"].as_array().unwrap().len(), 1);
    for absent in ["network-interfaces", "vsock", "balloon"] {
        assert!(config.get(absent).is_none(), "{absent} without a reason");
    }
    assert!(tree.contains_key("bin/microvm-shutdown"));
    assert!(!tree.contains_key("bin/microvm-balloon"));
}

#[test]
fn without_a_socket_the_api_is_off_and_no_script_pretends_to_use_it() {
    let spec = spec_from("firecracker-every-feature.json", json!({ "socket": null }));
    assert!(findings(&spec).is_empty(), "{:?}", findings(&spec));
    let tree = common::build(&spec);
    let (flags, _) = read_back(&tree, &spec);
    assert_eq!(flags.get("--no-api"), Some(&None));
    assert!(!flags.contains_key("--api-sock"));
    assert!(!tree.contains_key("bin/microvm-shutdown"));
    assert!(!tree.contains_key("bin/microvm-balloon"));
}

#[test]
fn without_a_store_disk_the_drive_list_is_empty_but_present() {
    // microvm.nix attached the store disk unconditionally.
    let spec = spec_from("firecracker-minimal.json", json!({ "storeDisk": null }));
    assert!(findings(&spec).is_empty());
    let (_, config) = read_back(&common::build(&spec), &spec);
    assert_eq!(config["drives"], json!([]));
}

#[test]
fn aarch64_guests_get_no_shutdown_script_and_no_i8042_parameters() {
    // SendCtrlAltDel answers 400 on aarch64; microvm.nix offered microvm-shutdown there anyway.
    let spec = spec_from(
        "firecracker-every-feature.json",
        json!({ "system": "aarch64-linux", "firecracker": { "driveIoEngine": "Sync" } }),
    );
    assert!(findings(&spec).is_empty(), "{:?}", findings(&spec));
    let tree = common::build(&spec);
    assert!(!tree.contains_key("bin/microvm-shutdown"));
    assert!(tree.contains_key("bin/microvm-balloon"));
    let (_, config) = read_back(&tree, &spec);
    let boot_args = config["boot-source"]["boot_args"].as_str().unwrap();
    assert!(!boot_args.contains("i8042"), "{boot_args}");
    assert!(config["machine-config"].get("smt").is_none());
}

fn codes_at(spec: &RunnerSpec) -> Vec<(String, String)> {
    findings(spec)
        .iter()
        .map(|d| {
            (
                d.code.clone(),
                d.path().map(ToString::to_string).unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn extra_config_is_read_back_as_firecrackers_config() {
    let with = |extra: Value| {
        spec_from(
            "firecracker-minimal.json",
            json!({ "firecracker": { "extraConfig": extra } }),
        )
    };
    let extra_config = (
        "microvm::firecracker::extra_config".to_owned(),
        "$.firecracker.extraConfig".to_owned(),
    );
    assert_eq!(
        codes_at(&with(json!({ "machine-config": { "smtt": true } }))),
        vec![extra_config.clone()]
    );
    assert_eq!(
        codes_at(&with(
            json!({ "balloon": { "amount_mib": "64", "deflate_on_oom": true } })
        )),
        vec![extra_config.clone()]
    );
    assert_eq!(
        codes_at(&with(json!({ "network_interfaces": [] }))),
        vec![extra_config]
    );
    // What firecracker checks at start is checked on the merged config.
    let spec = spec_from(
        "firecracker-every-feature.json",
        json!({ "firecracker": { "extraConfig": { "machine-config": { "smt": true } } } }),
    );
    assert_eq!(
        codes_at(&spec),
        vec![(
            "microvm::firecracker::smt".to_owned(),
            "$.firecracker.extraConfig".to_owned()
        )]
    );
    // A null drops a section; a replaced list replaces.
    let spec = with(json!({ "entropy": null, "drives": [] }));
    assert!(findings(&spec).is_empty());
    let (_, config) = read_back(&common::build(&spec), &spec);
    assert!(config.get("entropy").is_none());
    assert_eq!(config["drives"], json!([]));
}

#[test]
fn firecracker_limits_are_checked_where_the_spec_sets_them() {
    let spec = spec_from(
        "firecracker-minimal.json",
        json!({ "vcpu": 33, "mem": 513, "hugepageMem": true }),
    );
    let codes = codes_at(&spec);
    assert!(codes.contains(&(
        "microvm::firecracker::vcpu_count".to_owned(),
        "$.vcpu".to_owned()
    )));
    assert!(codes.contains(&(
        "microvm::firecracker::huge_pages_mem".to_owned(),
        "$.mem".to_owned()
    )));
    let spec = spec_from(
        "firecracker-minimal.json",
        json!({ "firecracker": { "cpu": { "vcpu_features": [] } } }),
    );
    assert_eq!(
        codes_at(&spec),
        vec![(
            "microvm::firecracker::cpu".to_owned(),
            "$.firecracker.cpu".to_owned()
        )]
    );
    let spec = spec_from(
        "firecracker-minimal.json",
        json!({ "firecracker": { "extraArgs": ["--api-sock", "x.sock", "--level=Info"] } }),
    );
    assert_eq!(codes_at(&spec).len(), 2, "{:?}", codes_at(&spec));
}

// ---- The scripts against a stub of firecracker's API ----

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: String,
}

/// A reply: status line ("204 No Content") and JSON body (may be empty).
type Reply = (&'static str, String);

struct Stub {
    requests: Arc<Mutex<Vec<Request>>>,
    done: Arc<AtomicBool>,
    socket: std::path::PathBuf,
}

impl Stub {
    /// Serves HTTP/1.1 on `socket`, one request per connection, until `handle` says to stop
    /// (the listener is then closed, as a VMM that exited) or the stub is dropped.
    fn start(
        socket: &Path,
        mut handle: impl FnMut(&Request, &[Request]) -> (Reply, bool) + Send + 'static,
    ) -> Stub {
        let listener = UnixListener::bind(socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (log, stop) = (requests.clone(), done.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut stream = stream.unwrap();
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                let before = log.lock().unwrap().clone();
                log.lock().unwrap().push(request.clone());
                let ((status, body), last) = handle(&request, &before);
                let mut reply = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
                if !body.is_empty() {
                    reply.push_str(&format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n",
                        body.len()
                    ));
                }
                reply.push_str("\r\n");
                reply.push_str(&body);
                let _ = stream.write_all(reply.as_bytes());
                if last {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        });
        Stub {
            requests,
            done,
            socket: socket.to_owned(),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        // Wakes the accept loop so the thread ends.
        if !self.done.swap(true, Ordering::SeqCst) {
            let _ = UnixStream::connect(&self.socket);
        }
    }
}

fn read_request(stream: &mut UnixStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut length = 0;
    let mut content_type = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "content-type" => content_type = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        content_type,
        body: String::from_utf8(body).ok()?,
    })
}

/// The runner of a fixture with real tools, written to a directory that is also the working
/// directory.
fn runner_in(dir: &Path, fixture: &str) -> Tree {
    let spec = spec_from(
        fixture,
        json!({ "tools": {
            "bash": "/bin/bash", "firecracker": "/bin/false", "curl": "/usr/bin/curl",
            "sleep": "/bin/sleep", "rm": "/bin/rm", "ip": "/bin/ip", "mkdir": "/bin/mkdir",
            "ln": "/bin/ln", "truncate": "/usr/bin/truncate", "mkfs.ext4": "/sbin/mkfs.ext4"
        } }),
    );
    let tree = common::build(&spec);
    for (path, entry) in &tree {
        if let Entry::File {
            contents,
            executable: true,
        } = entry
        {
            let target = dir.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, contents).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    tree
}

fn run(dir: &Path, script: &str, args: &[&str]) -> Output {
    Command::new(dir.join("bin").join(script))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn json_body(request: &Request) -> Value {
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/json"),
        "{request:?}"
    );
    serde_json::from_str(&request.body).unwrap()
}

#[test]
fn shutdown_sends_ctrl_alt_del_and_waits_until_the_api_is_gone() {
    common::require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    runner_in(dir.path(), "firecracker-minimal.json");
    // Answers until the action, then once more, then exits like firecracker after the reset.
    let stub = Stub::start(&dir.path().join("fc-minimal.sock"), |request, before| {
        let acted = before.iter().any(|r| r.path == "/actions");
        match (request.method.as_str(), request.path.as_str()) {
            ("PUT", "/actions") => (("204 No Content", String::new()), false),
            ("GET", "/") => (
                (
                    "200 OK",
                    r#"{"id":"fc-minimal","state":"Running"}"#.to_owned(),
                ),
                acted,
            ),
            _ => (
                ("400 Bad Request", r#"{"fault_message":"?"}"#.to_owned()),
                false,
            ),
        }
    });
    let output = run(dir.path(), "microvm-shutdown", &["--timeout", "10"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let requests = stub.requests();
    let actions: Vec<&Request> = requests.iter().filter(|r| r.path == "/actions").collect();
    assert_eq!(actions.len(), 1, "{requests:?}");
    assert_eq!(actions[0].method, "PUT");
    assert_eq!(
        json_body(actions[0]),
        json!({ "action_type": "SendCtrlAltDel" })
    );
    assert!(
        requests.last().unwrap().path == "/",
        "it waited for the API after the action: {requests:?}"
    );
}

#[test]
fn shutdown_gives_up_after_the_timeout_and_accepts_a_stopped_vm() {
    common::require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    runner_in(dir.path(), "firecracker-minimal.json");
    let output = run(dir.path(), "microvm-shutdown", &[]);
    assert!(output.status.success(), "no socket: the VM is not running");

    let _stub = Stub::start(
        &dir.path().join("fc-minimal.sock"),
        |request, _| match request.path.as_str() {
            "/actions" => (("204 No Content", String::new()), false),
            _ => (("200 OK", "{}".to_owned()), false),
        },
    );
    let output = run(dir.path(), "microvm-shutdown", &["--timeout", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("still running"));
}

/// A balloon that reaches `reached` MiB (or stays at 0 when `None`) one statistics poll after
/// the request.
fn balloon_stub(dir: &Path, reached: Option<u64>) -> Stub {
    Stub::start(&dir.join("fc-everything.sock"), move |request, before| {
        let asked = before.iter().any(|r| r.method == "PATCH");
        match (request.method.as_str(), request.path.as_str()) {
            ("PATCH", "/balloon") => (("204 No Content", String::new()), false),
            ("GET", "/balloon/statistics") => {
                let actual = if asked { reached.unwrap_or(0) } else { 0 };
                (
                    (
                        "200 OK",
                        format!(
                            r#"{{"target_mib":0,"actual_mib":{actual},"target_pages":0,"actual_pages":0}}"#
                        ),
                    ),
                    false,
                )
            }
            _ => (
                ("400 Bad Request", r#"{"fault_message":"?"}"#.to_owned()),
                false,
            ),
        }
    })
}

#[test]
fn balloon_patches_the_size_in_mib_and_waits_for_the_guest() {
    common::require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    runner_in(dir.path(), "firecracker-every-feature.json");
    let stub = balloon_stub(dir.path(), Some(256));
    let output = run(dir.path(), "microvm-balloon", &["256"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let requests = stub.requests();
    let patch = requests.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.path, "/balloon");
    assert_eq!(json_body(patch), json!({ "amount_mib": 256 }));
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path == "/balloon/statistics")
    );
    drop(stub);

    // firecracker refuses (a balloon larger than the guest, say): the script fails.
    std::fs::remove_file(dir.path().join("fc-everything.sock")).unwrap();
    let _refusing = Stub::start(&dir.path().join("fc-everything.sock"), |_, _| {
        (
            (
                "400 Bad Request",
                r#"{"fault_message":"refused"}"#.to_owned(),
            ),
            false,
        )
    });
    let output = run(dir.path(), "microvm-balloon", &["100"]);
    assert!(!output.status.success());
}

#[test]
fn balloon_fails_when_the_guest_does_not_follow() {
    common::require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    runner_in(dir.path(), "firecracker-every-feature.json");
    let _stub = balloon_stub(dir.path(), None);
    let started = std::time::Instant::now();
    let output = run(dir.path(), "microvm-balloon", &["512"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed().as_secs() >= 9, "it waited for the guest");
    assert!(String::from_utf8_lossy(&output.stderr).contains("holds 0 MiB, not 512"));
}
