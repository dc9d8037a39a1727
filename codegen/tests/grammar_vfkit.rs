//! vfkit's command line, parsed back with a model of its grammar and checked value by value
//! against the spec; and `microvm-shutdown` run against a stub of vfkit's REST API.
//!
//! Grammar model after vfkit v0.6.4 (crc-org/vfkit): the flags of `pkg/cmdline/cmdline.go`
//! (cobra/pflag: switches take no value, `--device` repeats, `--bootloader` is a string slice
//! that must be given once, the deprecated `--kernel`/`--initrd`/`--kernel-cmdline` exclude
//! it), `--bootloader` split at commas outside double quotes with the quotes trimmed
//! (`pkg/cmdline/string_slice.go`, `pkg/config/bootloader.go`), `--device` split at every comma
//! with per-device options where a bare option is a flag that must not have a value
//! (`pkg/config/virtio.go`, documented in `doc/usage.md`), and `--restful-uri unix:///path`
//! with an absolute path of at most 103 bytes (`pkg/rest/rest.go`). The REST API
//! (`pkg/rest/rest.go`, `pkg/rest/vf/vm_config.go`, `pkg/rest/define/config.go`):
//! `GET /vm/state`, and `POST /vm/state` with a JSON body `{"state":"Stop"}` (a graceful
//! `RequestStop`, answered 202) or `"HardStop"`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use microvm_codegen::runner::{Entry, Tree};
use microvm_codegen::spec::{RunnerSpec, Tool};

/// vfkit's limit on the socket path (macOS `sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 103;

/// A long flag, its short form, and whether it takes a value.
const FLAGS: &[(&str, Option<&str>, bool)] = &[
    ("--cpus", Some("-c"), true),
    ("--memory", Some("-m"), true),
    ("--bootloader", Some("-b"), true),
    ("--kernel", Some("-k"), true),
    ("--initrd", Some("-i"), true),
    ("--kernel-cmdline", Some("-C"), true),
    ("--device", Some("-d"), true),
    ("--gui", None, false),
    ("--log-level", None, true),
    ("--restful-uri", None, true),
    ("--timesync", Some("-t"), true),
    ("--ignition", None, true),
    ("--cloud-init", None, true),
    ("--nested", Some("-n"), false),
    ("--pidfile", None, true),
];

/// Options of each device type: (name, takes a value).
fn device_options(kind: &str) -> Option<&'static [(&'static str, bool)]> {
    Some(match kind {
        "virtio-blk" => &[
            ("path", true),
            ("type", true),
            ("readonly", false),
            ("deviceId", true),
        ],
        "virtio-fs" => &[("sharedDir", true), ("mountTag", true)],
        "virtio-net" => &[
            ("nat", false),
            ("mac", true),
            ("fd", true),
            ("unixSocketPath", true),
            ("type", true),
            ("path", true),
            ("vfkitMagic", true),
            ("offloading", true),
        ],
        "virtio-rng" | "virtio-balloon" => &[],
        "virtio-serial" => &[("stdio", false), ("pty", false), ("logFilePath", true)],
        "virtio-gpu" => &[("width", true), ("height", true)],
        "virtio-input" => &[("keyboard", false), ("pointing", false)],
        "rosetta" => &[
            ("mountTag", true),
            ("install", false),
            ("ignore-if-missing", false),
        ],
        "virtio-vsock" => &[
            ("port", true),
            ("socketURL", true),
            ("listen", false),
            ("connect", false),
        ],
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
struct Device {
    kind: String,
    /// Options in order; a flag has the value None.
    options: Vec<(String, Option<String>)>,
}

impl Device {
    fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    fn has_flag(&self, key: &str) -> bool {
        self.options.iter().any(|(k, v)| k == key && v.is_none())
    }
}

fn parse_device(text: &str) -> Result<Device, String> {
    let mut items = text.split(',');
    let kind = items.next().unwrap_or_default();
    let allowed = device_options(kind).ok_or(format!("unknown device type {kind:?}"))?;
    let mut options = Vec::new();
    for item in items.filter(|i| !i.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (item, None),
        };
        let (_, takes_value) = allowed
            .iter()
            .find(|(name, _)| *name == key)
            .ok_or(format!("unknown option {key:?} for {kind} devices"))?;
        match (takes_value, &value) {
            (false, Some(v)) if !v.is_empty() => {
                return Err(format!("unexpected value for {kind} {key:?} option: {v}"));
            }
            (true, None) => return Err(format!("{kind} option {key:?} needs a value")),
            _ => {}
        }
        options.push((key.to_owned(), value));
    }
    let device = Device {
        kind: kind.to_owned(),
        options,
    };
    let count = |keys: &[&str]| {
        keys.iter()
            .filter(|k| device.options.iter().any(|(o, _)| o == *k))
            .count()
    };
    match kind {
        "virtio-blk" if device.get("path").is_none() => Err("virtio-blk needs a path".into()),
        "virtio-serial" if count(&["stdio", "pty", "logFilePath"]) != 1 => {
            Err("virtio-serial needs exactly one of stdio, pty, logFilePath".into())
        }
        "virtio-net" if count(&["nat", "fd", "unixSocketPath", "path"]) != 1 => {
            Err("virtio-net needs exactly one of nat, fd, unixSocketPath".into())
        }
        "virtio-fs" if device.get("sharedDir").is_none() => Err("virtio-fs needs sharedDir".into()),
        "rosetta" if device.get("mountTag").is_none() => Err("rosetta needs mountTag".into()),
        "virtio-input" if device.options.len() != 1 => Err("virtio-input takes one type".into()),
        _ => Ok(device),
    }
}

/// `--bootloader`: split at commas outside double quotes; each item's surrounding quotes
/// trimmed, and the cmdline value's too.
fn parse_bootloader(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err("mismatched \"".into());
    }
    items.push(current);
    let trim = |s: &str| {
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
            s.trim_matches('"').to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut items = items.into_iter().map(|i| trim(&i));
    if items.next().as_deref() != Some("linux") {
        return Err("not a linux bootloader".into());
    }
    let mut options = BTreeMap::new();
    for item in items.filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((&item, ""));
        if !["kernel", "initrd", "cmdline"].contains(&key) {
            return Err(format!("unknown option for Linux bootloaders: {key}"));
        }
        options.insert(key.to_owned(), trim(value));
    }
    for key in ["kernel", "initrd", "cmdline"] {
        if options.get(key).is_none_or(String::is_empty) {
            return Err(format!("missing {key}"));
        }
    }
    Ok(options)
}

/// `--restful-uri`: the socket path of a `unix://` URI, with `${PWD}` standing for `pwd`.
fn socket_of_uri(uri: &str, pwd: &str) -> Result<String, String> {
    let path = uri
        .strip_prefix("unix://")
        .ok_or(format!("{uri} is not a unix URI"))?
        .replace("${PWD}", pwd);
    if !path.starts_with('/') {
        return Err(format!(
            "{uri}: a unix URI has no host, so the path must be absolute"
        ));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(format!("{uri}: the socket path exceeds macOS's limit"));
    }
    if path.contains(['%', '?', '#']) {
        return Err(format!("{uri}: the path would not survive URI parsing"));
    }
    Ok(path)
}

#[derive(Debug, Default)]
struct Parsed {
    flags: BTreeMap<&'static str, Vec<Option<String>>>,
    bootloader: BTreeMap<String, String>,
    devices: Vec<Device>,
}

fn parse(argv: &[String]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        let (long, _, takes) = FLAGS
            .iter()
            .find(|(long, short, _)| word == long || Some(word.as_str()) == *short)
            .ok_or(format!("unknown flag {word}"))?;
        let value = if *takes {
            let value = words.next().ok_or(format!("{long} has no value"))?;
            if value.starts_with('-') {
                return Err(format!("{long} would take {value} as its value"));
            }
            Some(value.clone())
        } else {
            None
        };
        match *long {
            "--device" => parsed
                .devices
                .push(parse_device(value.as_deref().unwrap())?),
            "--bootloader" => parsed.bootloader = parse_bootloader(value.as_deref().unwrap())?,
            "--cpus" | "--memory" => {
                value
                    .as_deref()
                    .unwrap()
                    .parse::<u32>()
                    .map_err(|e| format!("{long}: {e}"))?;
            }
            "--log-level" if !["debug", "info", "error"].contains(&value.as_deref().unwrap()) => {
                return Err(format!("--log-level {value:?}"));
            }
            _ => {}
        }
        let entry = parsed.flags.entry(long).or_default();
        if !entry.is_empty() && *long != "--device" {
            return Err(format!("{long} given twice"));
        }
        entry.push(value);
    }
    let has = |f: &str| parsed.flags.contains_key(f);
    if has("--bootloader") && (has("--kernel") || has("--initrd") || has("--kernel-cmdline")) {
        return Err("--kernel/--initrd/--kernel-cmdline exclude --bootloader".into());
    }
    if has("--gui") && !parsed.devices.iter().any(|d| d.kind == "virtio-gpu") {
        return Err("--gui needs a virtio-gpu device".into());
    }
    Ok(parsed)
}

fn value<'a>(parsed: &'a Parsed, flag: &str) -> &'a str {
    parsed.flags[flag][0].as_deref().unwrap()
}

fn script<'a>(tree: &'a Tree, name: &str) -> &'a str {
    match tree.get(name) {
        Some(Entry::File { contents, .. }) => contents,
        _ => panic!("no {name}"),
    }
}

fn build(spec: &RunnerSpec) -> Tree {
    let text = serde_json::to_string(spec).unwrap();
    let (spec, findings) = common::check(&microvm_codegen::diagnostic::SpecText::new(
        "mutated.json",
        text,
    ));
    assert!(findings.is_empty(), "{findings:?}");
    common::build(&spec.unwrap())
}

#[test]
fn every_feature_command_line_matches_the_grammar_and_the_spec() {
    let (spec, tree) = common::ok_fixture("vfkit-every-feature.json");
    let argv = common::exec_argv(&tree);
    assert_eq!(argv[0], spec.tools.vfkit.clone().unwrap());
    let parsed = parse(&argv[1..]).unwrap();

    assert_eq!(value(&parsed, "--cpus"), spec.vcpu.to_string());
    assert_eq!(value(&parsed, "--memory"), spec.mem.to_string());
    assert_eq!(value(&parsed, "--log-level"), "debug");
    assert!(parsed.flags.contains_key("--gui"));
    let boot = &parsed.bootloader;
    assert_eq!(boot["kernel"], spec.kernel);
    assert_eq!(boot["initrd"], spec.initrd_path);
    assert_eq!(
        boot["cmdline"],
        format!(
            "console=tty0 reboot=t panic=-1 {}",
            spec.kernel_params.join(" ")
        ),
        "every kernel parameter arrives whole, commas included"
    );
    assert!(spec.kernel_params.iter().any(|p| p.contains(',')));

    // A relative socket is made absolute with the working directory at run time.
    let uri = value(&parsed, "--restful-uri");
    let socket = spec.socket.clone().unwrap();
    assert_eq!(
        socket_of_uri(uri, "/Users/me/vms/everything").unwrap(),
        format!("/Users/me/vms/everything/{socket}")
    );
    let deep = format!("/{}", "d".repeat(MAX_SOCKET_PATH));
    assert!(socket_of_uri(uri, &deep).is_err());

    let devices = &parsed.devices;
    let of = |kind: &'static str| devices.iter().filter(move |d| d.kind == kind);
    assert_eq!(of("virtio-rng").count(), 1);
    assert_eq!(of("virtio-gpu").count(), 1);
    let inputs: Vec<_> = of("virtio-input").map(|d| d.options[0].0.clone()).collect();
    assert_eq!(inputs, ["keyboard", "pointing"]);
    assert_eq!(of("virtio-serial").count(), 0, "the console is the display");

    let disks: Vec<_> = of("virtio-blk").collect();
    assert_eq!(disks.len(), 1 + spec.volumes.len());
    assert_eq!(disks[0].get("path"), spec.store_disk.as_deref());
    assert!(disks[0].has_flag("readonly"));
    for (disk, volume) in disks[1..].iter().zip(&spec.volumes) {
        assert_eq!(disk.get("path"), Some(volume.image.as_str()));
        assert_eq!(disk.has_flag("readonly"), volume.read_only, "{disk:?}");
        assert_eq!(disk.get("deviceId"), volume.serial.as_deref(), "{disk:?}");
    }
    assert!(
        spec.volumes.iter().any(|v| v.read_only) && spec.volumes.iter().any(|v| v.serial.is_some())
    );

    let shares: Vec<_> = spec.virtiofs_shares().collect();
    let fs: Vec<_> = of("virtio-fs").collect();
    assert_eq!(fs.len(), shares.len());
    for (f, share) in fs.iter().zip(shares) {
        assert_eq!(f.get("sharedDir"), Some(share.source.as_str()));
        assert_eq!(f.get("mountTag"), Some(share.tag.as_str()));
    }
    assert!(
        !tree.contains_key("bin/virtiofsd-run"),
        "vfkit serves virtio-fs itself"
    );

    let nets: Vec<_> = of("virtio-net").collect();
    assert_eq!(nets.len(), spec.interfaces.len());
    for (net, interface) in nets.iter().zip(&spec.interfaces) {
        assert!(net.has_flag("nat"));
        assert_eq!(net.get("mac"), Some(interface.mac.as_str()));
    }

    let rosetta: Vec<_> = of("rosetta").collect();
    assert_eq!(rosetta.len(), 1);
    assert_eq!(rosetta[0].get("mountTag"), Some("rosetta"));
    assert!(rosetta[0].has_flag("install"));
    assert!(rosetta[0].has_flag("ignore-if-missing"));

    assert_eq!(
        argv[argv.len() - spec.vfkit.extra_args.len()..],
        spec.vfkit.extra_args[..],
        "extraArgs arrive last, unchanged"
    );

    let run = script(&tree, "bin/microvm-run");
    assert!(
        run.contains(&spec.pre_start),
        "microvm.preStart runs before vfkit (microvm.nix dropped it for vfkit)"
    );
    assert!(
        run.contains("darwin*)"),
        "microvm-run refuses non-macOS hosts"
    );
    assert!(tree.contains_key("bin/microvm-shutdown"));
    assert!(!tree.contains_key("bin/microvm-balloon"));
}

#[test]
fn minimal_command_line_matches_the_grammar() {
    let (spec, tree) = common::ok_fixture("vfkit-minimal.json");
    let parsed = parse(&common::exec_argv(&tree)[1..]).unwrap();
    assert_eq!(value(&parsed, "--log-level"), "info");
    assert!(!parsed.flags.contains_key("--gui"));
    assert!(parsed.bootloader["cmdline"].starts_with("console=hvc0 "));
    let serial: Vec<_> = parsed
        .devices
        .iter()
        .filter(|d| d.kind == "virtio-serial")
        .collect();
    assert_eq!(serial.len(), 1);
    assert!(serial[0].has_flag("stdio"));
    let disks: Vec<_> = parsed
        .devices
        .iter()
        .filter(|d| d.kind == "virtio-blk")
        .collect();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].get("path"), spec.store_disk.as_deref());
    assert!(socket_of_uri(value(&parsed, "--restful-uri"), "/var/lib/microvms/minimal").is_ok());
}

#[test]
fn an_absolute_socket_is_used_as_it_is() {
    let (mut spec, _) = common::ok_fixture("vfkit-minimal.json");
    spec.socket = Some("/var/run/vfkit/minimal.sock".to_owned());
    let tree = build(&spec);
    let parsed = parse(&common::exec_argv(&tree)[1..]).unwrap();
    assert_eq!(
        value(&parsed, "--restful-uri"),
        "unix:///var/run/vfkit/minimal.sock"
    );
    assert!(!script(&tree, "bin/microvm-run").contains("checked_path"));
}

#[test]
fn the_model_refuses_what_vfkit_refuses() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // microvm.nix's rosetta option spelling: vfkit's code knows only ignore-if-missing.
    assert!(
        parse(&args(&[
            "--device",
            "rosetta,mountTag=rosetta,ignoreIfMissing"
        ]))
        .is_err()
    );
    assert!(parse(&args(&["--device", "virtio-blk,path=a.img,readonly=true"])).is_err());
    assert!(parse(&args(&["--device", "virtio-serial,stdio,pty"])).is_err());
    assert!(parse(&args(&["--device", "virtio-net,mac=02:00:00:00:00:01"])).is_err());
    assert!(
        parse(&args(&[
            "--bootloader",
            "linux,kernel=k,initrd=i,cmdline=a,b"
        ]))
        .is_err()
    );
    assert!(parse(&args(&["--gui"])).is_err());
    assert!(socket_of_uri("unix://vm.sock", "/x").is_err());
    assert!(
        parse(&args(&[
            "--bootloader",
            "linux,kernel=k,initrd=i,cmdline=\"a,b\"",
            "--device",
            "virtio-blk,path=a.img,readonly,deviceId=x"
        ]))
        .is_ok()
    );
}

#[test]
fn values_vfkit_cannot_carry_are_refused() {
    let (mut spec, _) = common::ok_fixture("vfkit-every-feature.json");
    spec.volumes[0].image = "a,b.img".to_owned();
    // Not ASCII: Virtualization.framework's own rule (the length is every hypervisor's).
    spec.volumes[0].serial = Some("disk-ü".to_owned());
    spec.kernel_params.push("quote=\"x\"".to_owned());
    spec.shares[0].read_only = true; // refused by the capability table, not by a vfkit check
    spec.system = microvm_codegen::spec::System::X86_64Linux;
    spec.vfkit.extra_args = vec!["--cpus".to_owned(), "8".to_owned()];
    spec.socket = Some(format!("/{}", "s".repeat(MAX_SOCKET_PATH)));
    let text = serde_json::to_string(&spec).unwrap();
    let (_, findings) = common::check(&microvm_codegen::diagnostic::SpecText::new(
        "bad.json", text,
    ));
    let mut refused: Vec<String> = findings
        .iter()
        .filter(|d| d.code.starts_with("microvm::vfkit::"))
        .map(|d| format!("{} {}", d.code, d.path().unwrap()))
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            "microvm::vfkit::extra_args $.vfkit.extraArgs[0]",
            "microvm::vfkit::rosetta_arch $.vfkit.rosetta.enable",
            "microvm::vfkit::serial $.volumes[0].serial",
            "microvm::vfkit::socket_path_too_long $.socket",
            "microvm::vfkit::unrepresentable $.kernelParams[3]",
            "microvm::vfkit::unrepresentable $.volumes[0].image",
        ],
        "{findings:?}"
    );
}

/// The lines of microvm-run that check the run-time socket path, run on their own from `dir`.
fn run_socket_check(run: &str, dir: &Path) -> std::process::Output {
    let start = run.find("checked_path=").expect("a socket path check");
    let end = start + run[start..].find("\nfi\n").unwrap() + 4;
    Command::new("bash")
        .arg("-euc")
        .arg(&run[start..end])
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn microvm_run_checks_the_absolute_socket_path_at_run_time() {
    let (_, tree) = common::ok_fixture("vfkit-minimal.json");
    let run = script(&tree, "bin/microvm-run");
    let short = tempfile::tempdir().unwrap();
    let output = run_socket_check(run, short.path());
    assert!(output.status.success(), "{output:?}");

    let mut deep = short.path().to_path_buf();
    while deep.as_os_str().len() <= MAX_SOCKET_PATH {
        deep.push("long-directory-name");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let output = run_socket_check(run, &deep);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("microvm.socket") && stderr.contains("103 bytes"),
        "{stderr}"
    );

    let odd = short.path().join("100%");
    std::fs::create_dir_all(&odd).unwrap();
    assert_eq!(run_socket_check(run, &odd).status.code(), Some(1));
}

#[test]
fn microvm_run_refuses_to_start_on_linux() {
    let (_, tree) = common::ok_fixture("vfkit-minimal.json");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(script(&tree, "bin/microvm-run"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("vfkit runs only on darwin hosts"),
        "{output:?}"
    );
}

// ---- microvm-shutdown against a stub of vfkit's REST API ----

#[derive(Debug, Clone, PartialEq)]
struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Accept the stop request and go away (the guest powers off).
    Stops,
    /// Accept the stop request but keep running (the guest ignores it).
    Ignores,
    /// Answer the stop request with 500 (vfkit could not ask the guest).
    Fails,
}

struct Stub {
    requests: Arc<Mutex<Vec<Request>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start(socket: &Path, behaviour: Behaviour) -> Stub {
        let listener = UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (log, stop, path) = (requests.clone(), done.clone(), socket.to_owned());
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                stream.set_nonblocking(false).unwrap();
                let request = read_request(&stream);
                let stopping = request.method == "POST";
                let (status, body) = match (request.method.as_str(), behaviour) {
                    ("GET", _) => (
                        "200 OK",
                        r#"{"state":"VirtualMachineStateRunning","canStop":true,"canHardStop":true}"#,
                    ),
                    ("POST", Behaviour::Fails) => {
                        ("500 Internal Server Error", r#"{"error":"no"}"#)
                    }
                    ("POST", _) => ("202 Accepted", ""),
                    _ => ("404 Not Found", ""),
                };
                log.lock().unwrap().push(request);
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                drop(stream);
                if stopping && behaviour == Behaviour::Stops {
                    // vfkit exits once the guest is off, removing its socket.
                    std::thread::sleep(Duration::from_millis(300));
                    std::fs::remove_file(&path).unwrap();
                    break;
                }
            }
        });
        Stub {
            requests,
            done,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Request> {
        self.done.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.requests.lock().unwrap().clone()
    }
}

fn read_request(stream: &std::os::unix::net::UnixStream) -> Request {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap().to_owned();
    let path = parts.next().unwrap().to_owned();
    let mut length = 0;
    let mut content_type = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "content-type" => content_type = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Request {
        method,
        path,
        content_type,
        body: String::from_utf8(body).unwrap(),
    }
}

fn which(program: &str) -> String {
    let paths = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed"))
        .display()
        .to_string()
}

/// Writes microvm-shutdown for a VM whose API socket is `dir/vm.sock`, using this machine's
/// curl, and runs it there with `args`.
fn run_shutdown(dir: &Path, args: &[&str]) -> std::process::Output {
    common::require("curl", "curl");
    let (mut spec, _) = common::ok_fixture("vfkit-minimal.json");
    spec.socket = Some("vm.sock".to_owned());
    for tool in [Tool::Bash, Tool::Curl, Tool::Sleep, Tool::Rm] {
        spec.tools.set(tool, which(tool.name()));
    }
    let tree = build(&spec);
    let path = dir.join("microvm-shutdown");
    std::fs::write(&path, script(&tree, "bin/microvm-shutdown")).unwrap();
    Command::new("bash")
        .arg(&path)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn is_stop_request(request: &Request) -> bool {
    request.method == "POST"
        && request.path == "/vm/state"
        && request.content_type.as_deref() == Some("application/json")
        && serde_json::from_str::<serde_json::Value>(&request.body).ok()
            == Some(serde_json::json!({ "state": "Stop" }))
}

#[test]
fn shutdown_asks_for_a_graceful_stop_and_waits_for_vfkit_to_exit() {
    let dir = tempfile::tempdir().unwrap();
    let stub = Stub::start(&dir.path().join("vm.sock"), Behaviour::Stops);
    let output = run_shutdown(dir.path(), &["--timeout", "10"]);
    let requests = stub.finish();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let posts: Vec<_> = requests.iter().filter(|r| r.method != "GET").collect();
    assert_eq!(posts.len(), 1, "{requests:?}");
    assert!(is_stop_request(posts[0]), "{:?}", posts[0]);
    assert!(
        requests.iter().all(|r| r.path == "/vm/state"),
        "{requests:?}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("powered off"));
}

#[test]
fn shutdown_times_out_when_the_guest_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let stub = Stub::start(&dir.path().join("vm.sock"), Behaviour::Ignores);
    let output = run_shutdown(dir.path(), &["--timeout", "1"]);
    let requests = stub.finish();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(requests.iter().filter(|r| is_stop_request(r)).count(), 1);
    assert!(String::from_utf8_lossy(&output.stderr).contains("still running"));
}

#[test]
fn shutdown_fails_when_vfkit_refuses_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let stub = Stub::start(&dir.path().join("vm.sock"), Behaviour::Fails);
    let output = run_shutdown(dir.path(), &[]);
    stub.finish();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("refused"));
}

#[test]
fn shutdown_of_a_vm_that_is_not_running_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_shutdown(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not running"));
}
