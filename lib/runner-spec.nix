# The runner spec of one VM for one hypervisor: exactly the fields of the Rust `RunnerSpec`
# (codegen/src/spec, schema in doc/runner-spec.schema.json), as an attrset for builtins.toJSON.
# Store paths are interpolated, so the spec file's references are the runner's dependencies.
#
#   pkgs           the guest's package set (guest system, kernel target)
#   microvmConfig  config.microvm // { hostName; hypervisor; }
#   toplevel       the guest's system.build.toplevel (share/microvm/system), or null
#   host           { user; group; } owning taps and device nodes, or null for the generator's
#                  default (microvm:kvm, the host module's user)
#   checkCapabilities  false returns the spec even where the hypervisor lacks a feature (for
#                  tests that compare these checks with the generator's)
#
# The spec of a VM that uses a feature its hypervisor lacks (lib/capabilities.json) is an
# evaluation error naming the option, the hypervisor and what to do instead.
{ lib }:

{
  pkgs,
  microvmConfig,
  toplevel ? null,
  host ? null,
  checkCapabilities ? true,
}:

let
  capabilities = import ./capabilities.nix { inherit lib; };

  inherit (lib)
    any
    filter
    optionalAttrs
    mapAttrs
    ;

  cfg = microvmConfig;
  hypervisor = cfg.hypervisor;
  platform = pkgs.stdenv.hostPlatform;
  vmPkgs = cfg.vmHostPackages;

  bin = pkg: name: "${lib.getBin pkg}/bin/${name}";

  # microvm.readiness (nixos-modules/microvm/services.nix); a configuration made without that
  # module has none.
  readiness = cfg.readiness or { enable = false; };

  # Direct kernel boot wants an uncompressed vmlinux on these hypervisors on x86_64.
  wantsVmlinux =
    platform.isx86_64
    && builtins.elem hypervisor [
      "cloud-hypervisor"
      "firecracker"
      "crosvm"
    ];
  kernel =
    if wantsVmlinux then
      "${cfg.kernel.dev}/vmlinux"
    else
      "${cfg.kernel}/${cfg.kernel.target or platform.linux-kernel.target}";

  # Packages the generated scripts call; each only when a feature needs it.
  hasShares = proto: any (s: s.proto == proto) cfg.shares;
  hasInterface = type: any (i: i.type == type) cfg.interfaces;
  autoCreated = filter (v: v.autoCreate) cfg.volumes;
  mkfsPackages = {
    ext2 = vmPkgs.e2fsprogs;
    ext3 = vmPkgs.e2fsprogs;
    ext4 = vmPkgs.e2fsprogs;
    xfs = vmPkgs.xfsprogs;
    btrfs = vmPkgs.btrfs-progs;
    vfat = vmPkgs.dosfstools;
  };
  # Unknown filesystems are left to the generator, which refuses them with the list it supports.
  mkfsTools = builtins.listToAttrs (
    map (v: {
      name = "mkfs.${v.fsType}";
      value = bin mkfsPackages.${v.fsType} "mkfs.${v.fsType}";
    }) (filter (v: mkfsPackages ? ${v.fsType}) autoCreated)
  );
  coreutils = names: lib.genAttrs names (bin vmPkgs.coreutils);

  socat.socat = bin vmPkgs.socat "socat";
  curl.curl = bin vmPkgs.curl "curl";
  withSocket = tools: optionalAttrs (cfg.socket != null) tools;
  # Copies the console of a hypervisor that needs a terminal for stdio to the runner's stdout.
  consoleCopier.cat = bin vmPkgs.coreutils "cat";

  # optimize.enable builds the smaller qemu NixOS tests use, unless graphics need the full one.
  qemuPackage =
    if cfg.optimize.enable && !cfg.graphics.enable && cfg.qemu.package ? override then
      cfg.qemu.package.override { nixosTestRunner = true; }
    else
      cfg.qemu.package;

  hypervisorTools =
    {
      qemu = {
        qemu = bin qemuPackage "qemu-system-${platform.qemuArch}";
      }
      // withSocket socat
      // optionalAttrs (any (f: f.from == "guest") cfg.forwardPorts) socat
      // optionalAttrs (hasInterface "bridge") {
        # The setuid wrapper of the NixOS host; a store path cannot carry the capability.
        qemu-bridge-helper = "/run/wrappers/bin/qemu-bridge-helper";
      };
      cloud-hypervisor = {
        cloud-hypervisor = bin cfg.cloud-hypervisor.package "cloud-hypervisor";
      }
      // withSocket curl
      # crosvm's vhost-user GPU device, as microvm.nix runs it for cloud-hypervisor.
      // optionalAttrs cfg.graphics.enable {
        crosvm = bin cfg.graphics.crosvmPackage "crosvm";
      };
      firecracker = {
        firecracker = bin cfg.firecracker.package "firecracker";
      }
      // withSocket curl;
      crosvm.crosvm = bin cfg.crosvm.package "crosvm";
      kvmtool.lkvm = bin cfg.kvmtool.package "lkvm";
      stratovirt = {
        stratovirt = bin cfg.stratovirt.package "stratovirt";
      }
      // consoleCopier
      // optionalAttrs cfg.balloon (withSocket socat);
      alioth = {
        alioth = bin cfg.alioth.package "alioth";
        # alioth's stdio console needs a terminal; microvm-run makes one without.
        script = bin vmPkgs.util-linux "script";
      };
      vfkit = {
        vfkit = bin cfg.vfkit.package "vfkit";
      }
      // withSocket curl;
    }
    .${hypervisor};

  # coreutils is one package: all of its programs the generator knows are always given, so
  # scripts a renderer adds (removing a stale socket, waiting for a VM) always find theirs.
  tools = {
    bash = bin vmPkgs.bash "bash";
  }
  // coreutils [
    "mkdir"
    "ln"
    "rm"
    "truncate"
    "chown"
    "sleep"
    "nproc"
  ]
  // optionalAttrs (autoCreated != [ ]) (
    {
      chattr = bin vmPkgs.e2fsprogs "chattr";
    }
    // mkfsTools
  )
  # A volume holding a host file's bytes is copied with cat.
  // optionalAttrs (any (v: v.contentsFile != null) cfg.volumes) (coreutils [ "cat" ])
  // optionalAttrs (hasInterface "tap" || hasInterface "macvtap") {
    ip = bin vmPkgs.iproute2 "ip";
  }
  // optionalAttrs (any (d: d.bus == "pci") cfg.devices) {
    modprobe = bin vmPkgs.kmod "modprobe";
  }
  // optionalAttrs readiness.enable {
    microvm-notify-bridge = bin cfg.codegen.package "microvm-notify-bridge";
  }
  // optionalAttrs (hasShares "virtiofs" && hypervisor != "vfkit") {
    virtiofsd = bin cfg.virtiofsd.package "virtiofsd";
    # virtiofsd-run tells the microvm-virtiofsd@ unit when every share is served.
    systemd-notify = bin vmPkgs.systemd "systemd-notify";
  }
  // hypervisorTools;

  # `threadPoolSize` takes a number or the shell expression "`nproc`"; the spec takes a number
  # or null, which the generator turns into the host's CPU count at start.
  threadPoolSize =
    let
      value = cfg.virtiofsd.threadPoolSize;
    in
    if builtins.isInt value then
      value
    else if value == "`nproc`" then
      null
    else if builtins.match "[0-9]+" value != null then
      lib.toInt value
    else
      throw ''microvm.virtiofsd.threadPoolSize: "${value}" is neither a number nor "`nproc`"'';

  volume =
    v:
    {
      inherit (v)
        image
        serial
        direct
        readOnly
        label
        mountPoint
        autoCreate
        mkfsExtraArgs
        fsType
        imageType
        ;
    }
    # `size` has no default; it is only read where the runner creates the image.
    // optionalAttrs v.autoCreate { inherit (v) size; }
    // optionalAttrs v.ephemeral { ephemeral = true; }
    # A host path read at start: kept a string, never copied into the store.
    // optionalAttrs (v.contentsFile != null) { contentsFile = toString v.contentsFile; };

  share =
    s:
    {
      inherit (s)
        tag
        socket
        source
        mountPoint
        proto
        readOnly
        cache
        posixAcl
        extraArgs
        ;
    }
    # Only 9p reads the security model; like microvm.nix, a virtiofs share's value is never
    # forced, so one outside the enum evaluates there.
    // optionalAttrs (s.proto == "9p") { inherit (s) securityModel; };

  interface =
    i:
    {
      inherit (i) type id mac bridge;
      tap = {
        inherit (i.tap) vhost;
      };
    }
    # `macvtap.link` and `.mode` have no defaults; they exist only on macvtap interfaces.
    // optionalAttrs (i.type == "macvtap") {
      macvtap = {
        inherit (i.macvtap) link mode;
      };
    };

  endpoint = e: { inherit (e) address port; };
  forwardPort = f: {
    inherit (f) from proto;
    host = endpoint f.host;
    guest = endpoint f.guest;
  };

  device = d: {
    inherit (d) bus path;
    qemu = {
      inherit (d.qemu) id bus deviceExtraArgs;
    };
  };

  pcieRootPort = p: { inherit (p) id bus chassis slot addr; };
  violations = capabilities.violations hypervisor cfg;

  spec = {
    specVersion = 1;
    inherit (cfg)
      hostName
      hypervisor
      vcpu
      mem
      hugepageMem
      hotplugMem
      hotpluggedMem
      balloon
      initialBalloonMem
      deflateOnOOM
      cpu
      user
      socket
      kernelParams
      preStart
      extraArgsScript
      prettyProcnames
      machineId
      binScripts
      ;
    system = platform.system;
    inherit kernel;
    initrdPath = "${cfg.initrdPath}";
    storeDisk = if cfg.storeOnDisk then "${cfg.storeDisk}" else null;
    # Credentials stay where they are on the host: a path value is not copied into the store.
    credentialFiles = mapAttrs (_: toString) cfg.credentialFiles;
    volumes = map volume cfg.volumes;
    shares = map share cfg.shares;
    interfaces = map interface cfg.interfaces;
    forwardPorts = map forwardPort cfg.forwardPorts;
    devices = map device cfg.devices;
    vsock = {
      inherit (cfg.vsock) cid;
    }
    // optionalAttrs readiness.enable {
      notify = {
        inherit (readiness) port;
      };
    };
    graphics = {
      inherit (cfg.graphics)
        enable
        backend
        socket
        vulkan
        hostmem
        ;
    };
    qemu = {
      inherit (cfg.qemu)
        machine
        machineOpts
        extraArgs
        serialConsole
        ;
      pcieRootPorts = map pcieRootPort cfg.qemu.pcieRootPorts;
      # As microvm.nix: sandbox when qemu is built with seccomp, unless the bridge helper (which
      # needs privileges) runs.
      sandbox =
        builtins.elem "--enable-seccomp" (qemuPackage.configureFlags or [ ]) && !(hasInterface "bridge");
    };
    cloud-hypervisor = {
      inherit (cfg.cloud-hypervisor) platformOEMStrings extraArgs;
    };
    firecracker = {
      inherit (cfg.firecracker)
        cpu
        driveIoEngine
        extraArgs
        extraConfig
        ;
    };
    crosvm = {
      inherit (cfg.crosvm) extraArgs pivotRoot;
    };
    vfkit = {
      inherit (cfg.vfkit) extraArgs logLevel;
      rosetta = {
        inherit (cfg.vfkit.rosetta) enable install ignoreIfMissing;
      };
    };
    virtiofsd = {
      inherit (cfg.virtiofsd) inodeFileHandles group extraArgs;
      inherit threadPoolSize;
    };
    systemSymlink = if cfg.systemSymlink && toplevel != null then "${toplevel}" else null;
    inherit tools;
  }
  // optionalAttrs (host != null) { inherit host; };
in
if violations == [ ] || !checkCapabilities then
  spec
else
  throw (
    "MicroVM ${cfg.hostName}: the ${hypervisor} runner cannot be built:\n"
    + lib.concatMapStrings (v: "- ${v.message}\n") violations
  )
