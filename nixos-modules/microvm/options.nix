# The generic `microvm.*` guest options: the names, types and defaults of microvm.nix, so a
# configuration written for it evaluates here unchanged. Options that belong to one concern live
# next to it: storeDisk (store-disk.nix), bootDisk (boot-disk.nix), deploy.* (ssh-deploy.nix),
# vsock.ssh.enable (vsock-ssh.nix).
#
# Every declaration is a plain `mkOption { … }` (submodules as `types.submodule { options = …; }`):
# the generator's option reader parses this file with rnix to list the options and write docs.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types literalExpression;

  microvmLib = import ../../lib { inherit lib; };

  cfg = config.microvm;
  hostName = config.networking.hostName;

  machineIdOf =
    name:
    let
      hash = builtins.hashString "sha256" "microvm.nix:${name}";
      part = offset: length: builtins.substring offset length hash;
    in
    lib.concatStringsSep "-" [
      (part 0 8)
      (part 8 4)
      (part 12 4)
      (part 16 4)
      (part 20 12)
    ];

  kernelAtLeast = lib.versionAtLeast cfg.kernel.version;

  # (pkgs.formats.json { }).type without pkgs, so the options evaluate without nixpkgs.
  jsonValue =
    with types;
    let
      value =
        nullOr (oneOf [
          bool
          int
          float
          str
          path
          (attrsOf value)
          (listOf value)
        ])
        // {
          description = "JSON value";
        };
    in
    value;
in
{
  imports = [
    (lib.mkRemovedOptionModule [
      "microvm"
      "balloonMem"
    ] "It was replaced by the boolean option microvm.balloon.")
    (lib.mkRemovedOptionModule [
      "microvm"
      "qemu"
      "bios"
      "enable"
    ] "qemu always boots the kernel directly (-kernel); there is no firmware to enable.")
  ];

  options.microvm = {
    guest.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether this NixOS configuration is a microVM guest: store disk, mounts, kernel modules,
        assertions and the optimisations. The runners are declared either way.
      '';
    };

    optimize.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Smaller closure and faster boot: no documentation, systemd in the initrd where it works,
        systemd-networkd without wait-online, no system switching unless the VM can be switched
        over ssh, and the smaller qemu build NixOS tests use.
      '';
    };

    cpu = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "cortex-a53";
      description = ''
        CPU model to emulate (qemu only). Set, qemu runs the guest under TCG instead of KVM,
        which also runs guests of another architecture, slowly.
      '';
    };

    hypervisor = mkOption {
      type = types.enum microvmLib.hypervisors;
      default = "qemu";
      description = ''
        The hypervisor `declaredRunner` uses: one of ${lib.concatStringsSep ", " microvmLib.hypervisors}.
      '';
    };

    preStart = mkOption {
      type = types.lines;
      default = "";
      description = "Shell commands `microvm-run` runs before it starts the hypervisor.";
    };

    extraArgsScript = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = ''
        A command run by `microvm-run` at start; its output (one line) is appended to the
        hypervisor's arguments.
      '';
    };

    socket = mkOption {
      type = types.nullOr types.str;
      default =
        if builtins.elem cfg.hypervisor microvmLib.table.features.controlSocket.supported then
          "${hostName}.sock"
        else
          null;
      defaultText = literalExpression ''
        if the hypervisor has a control socket (lib/capabilities.json) then "''${config.networking.hostName}.sock" else null
      '';
      description = ''
        The hypervisor's control socket, relative to the VM's working directory. It is what
        `microvm-shutdown` and `microvm-balloon` talk to. kvmtool and alioth have none, so it
        defaults to null there (microvm.nix set it and ignored it).
      '';
    };

    user = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "User the hypervisor switches to when it is started as root (qemu only).";
    };

    kernel = mkOption {
      type = types.package;
      default = config.boot.kernelPackages.kernel;
      defaultText = literalExpression "config.boot.kernelPackages.kernel";
      description = ''
        The kernel the runners boot. Prefer setting `boot.kernelPackages`, which also picks the
        matching modules.
      '';
    };

    initrdPath = mkOption {
      type = types.path;
      default = "${config.system.build.initialRamdisk}/${config.system.boot.loader.initrdFile}";
      defaultText = literalExpression ''"''${config.system.build.initialRamdisk}/''${config.system.boot.loader.initrdFile}"'';
      description = "The initrd file the runners boot.";
    };

    kernelParams = mkOption {
      type = types.listOf types.str;
      description = ''
        The kernel command line of the runners: `boot.kernelParams` and `init=` of the system.
        It is kept out of the system's toplevel, so it can refer to the toplevel.
      '';
    };

    vcpu = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "Number of virtual CPUs.";
    };

    mem = mkOption {
      type = types.ints.positive;
      default = 512;
      description = "Guest RAM in MiB.";
    };

    hugepageMem = mkOption {
      type = types.bool;
      default = false;
      description = "Back guest RAM with huge pages.";
    };

    hotplugMem = mkOption {
      type = types.ints.unsigned;
      default = 0;
      description = "Size in MiB of the virtio-mem region memory can be hotplugged into (0: none).";
    };

    hotpluggedMem = mkOption {
      type = types.ints.unsigned;
      default = cfg.hotplugMem;
      defaultText = literalExpression "config.microvm.hotplugMem";
      description = "Hotplug memory in MiB plugged in at start.";
    };

    balloon = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Add a virtio-balloon device, through which the host takes memory back from the guest
        (`microvm-balloon`). Where the hypervisor has virtio-mem, prefer `hotplugMem`.
      '';
    };

    initialBalloonMem = mkOption {
      type = types.ints.unsigned;
      default = 0;
      description = "Balloon size in MiB at start.";
    };

    deflateOnOOM = mkOption {
      type = types.bool;
      default = true;
      description = "Let the guest deflate the balloon when it runs out of memory.";
    };

    forwardPorts = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            from = mkOption {
              type = types.enum [
                "host"
                "guest"
              ];
              default = "host";
              description = ''
                `host`: connections to the host port reach the guest port. `guest`: connections
                the guest makes to guest.address:guest.port reach the host port.
              '';
            };
            proto = mkOption {
              type = types.enum [
                "tcp"
                "udp"
              ];
              default = "tcp";
              description = "Protocol to forward.";
            };
            host.address = mkOption {
              type = types.str;
              default = "";
              description = "IPv4 address on the host (empty: any).";
            };
            host.port = mkOption {
              type = types.port;
              description = "Port on the host.";
            };
            guest.address = mkOption {
              type = types.str;
              default = "";
              description = "IPv4 address in the guest's user network.";
            };
            guest.port = mkOption {
              type = types.port;
              description = "Port in the guest.";
            };
          };
        }
      );
      default = [ ];
      example = literalExpression ''
        [
          { from = "host"; host.port = 2222; guest.port = 22; }
          { from = "guest"; guest.address = "10.0.2.10"; guest.port = 80; host.address = "127.0.0.1"; host.port = 8080; }
        ]
      '';
      description = ''
        Ports forwarded through user-mode networking (qemu, on the first interface of type
        `user`; IPv4 only). Open the guest ports in the guest's firewall too.
      '';
    };

    volumes = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            image = mkOption {
              type = types.str;
              description = "Image file on the host, relative to the VM's working directory or absolute.";
            };
            serial = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = ''
                Disk serial the guest sees. The guest mounts the volume by it
                (/dev/disk/by-id/virtio-<serial>) when it is set.
              '';
            };
            direct = mkOption {
              type = types.bool;
              default = false;
              description = "Open the image with O_DIRECT (no host page cache).";
            };
            readOnly = mkOption {
              type = types.bool;
              default = false;
              description = "Attach the disk read-only.";
            };
            label = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = ''
                Filesystem label, given when `autoCreate` makes the filesystem. Without a serial
                the guest mounts the volume by it (/dev/disk/by-label/<label>).
              '';
            };
            mountPoint = mkOption {
              type = types.nullOr types.path;
              description = "Where the guest mounts the volume; null: not mounted.";
            };
            size = mkOption {
              type = types.int;
              description = "Size in MiB of an image `autoCreate` makes.";
            };
            autoCreate = mkOption {
              type = types.bool;
              default = true;
              description = ''
                Create the image and its filesystem when the file does not exist. An existing
                image is never touched.
              '';
            };
            mkfsExtraArgs = mkOption {
              type = types.listOf types.str;
              default = [ ];
              description = "Extra arguments for mkfs when the image is created.";
            };
            ephemeral = mkOption {
              type = types.bool;
              default = cfg.ephemeral;
              defaultText = literalExpression "config.microvm.ephemeral";
              description = ''
                Throw the image away: the runner removes what the last run left and creates it
                from nothing at every start, and deletes it when the VM stops, so a restart
                sees an empty disk. Needs `autoCreate` (or `contentsFile`).
              '';
            };
            contentsFile = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "/run/credentials/microvm@ci-1.service/runner-token";
              description = ''
                Host file whose bytes become the image at every start (padded to whole
                512-byte sectors, no filesystem): how a secret read at start reaches a guest
                whose hypervisor passes no systemd credentials. The file is read by the runner
                at start, never copied into the store; the volume must be `ephemeral`,
                `readOnly` and have `autoCreate = false`.
              '';
            };
            fsType = mkOption {
              type = types.str;
              default = "ext4";
              description = "Filesystem to create (ext2/3/4, xfs, btrfs, vfat) and to mount.";
            };
            imageType = mkOption {
              type = types.enum [
                "raw"
                "qcow2"
                "vhd"
                "vhdx"
              ];
              default = "raw";
              description = ''
                Image format the hypervisor reads. Created images are always raw.
              '';
            };
          };
        }
      );
      default = [ ];
      description = "Disk images attached as virtio block devices.";
    };

    interfaces = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            type = mkOption {
              type = types.enum [
                "user"
                "tap"
                "macvtap"
                "bridge"
              ];
              description = ''
                `user`: the hypervisor's own NAT network. `tap`: a tap device on the host
                (bin/tap-up creates it). `macvtap`: a macvtap on a host interface.
                `bridge`: a tap the qemu bridge helper adds to a host bridge.
              '';
            };
            id = mkOption {
              type = types.str;
              description = "Host-side interface name (at most 15 bytes), or the hypervisor's id for it.";
            };
            macvtap.link = mkOption {
              type = types.str;
              description = "Host interface the macvtap sits on (type = \"macvtap\").";
            };
            macvtap.mode = mkOption {
              type = types.enum [
                "private"
                "vepa"
                "bridge"
                "passthru"
                "source"
              ];
              description = "MACVLAN mode (type = \"macvtap\").";
            };
            bridge = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "Host bridge to attach to (type = \"bridge\" only).";
            };
            mac = mkOption {
              type = types.str;
              description = ''
                The guest's MAC address. The guest configures the interface by it
                (systemd-networkd matches on it).
              '';
            };
            tap.vhost = mkOption {
              type = types.bool;
              default = false;
              description = "vhost-net acceleration for a tap or macvtap interface (qemu, kvmtool; needs /dev/vhost-net on the host).";
            };
          };
        }
      );
      default = [ ];
      description = "Network interfaces.";
    };

    shares = mkOption {
      type = types.listOf (
        types.submodule (
          { config, ... }:
          {
            options = {
              tag = mkOption {
                type = types.str;
                description = "Mount tag; unique per VM.";
              };
              socket = mkOption {
                type = types.nullOr types.str;
                default =
                  if config.proto == "virtiofs" then "${hostName}-virtiofs-${config.tag}.sock" else null;
                defaultText = literalExpression ''if proto == "virtiofs" then "''${hostName}-virtiofs-''${tag}.sock" else null'';
                description = "vhost-user socket of the share's virtiofsd (virtiofs only).";
              };
              source = mkOption {
                type = types.nonEmptyStr;
                description = ''
                  Host directory. Sharing /nix/store turns `storeOnDisk` off by default.
                '';
              };
              securityModel = mkOption {
                type = types.enum [
                  "passthrough"
                  "none"
                  "mapped"
                  "mapped-file"
                ];
                default = "none";
                description = "qemu 9p security model.";
              };
              mountPoint = mkOption {
                type = types.path;
                description = "Where the guest mounts the share.";
              };
              proto = mkOption {
                type = types.enum [
                  "9p"
                  "virtiofs"
                ];
                default = "9p";
                description = "Protocol: 9p (built into qemu) or virtiofs (one virtiofsd per share).";
              };
              readOnly = mkOption {
                type = types.bool;
                default = false;
                description = "Share read-only.";
              };
              cache = mkOption {
                type = types.enum [
                  "auto"
                  "always"
                  "metadata"
                  "never"
                ];
                default = "auto";
                description = "virtiofsd cache policy (ignored for 9p).";
              };
              posixAcl = mkOption {
                type = types.bool;
                default = true;
                description = ''
                  Run virtiofsd with POSIX ACLs and xattrs. Turn it off to remap ids with
                  --translate-uid/--translate-gid, which virtiofsd does not combine with ACLs.
                '';
              };
              extraArgs = mkOption {
                type = types.listOf types.str;
                default = [ ];
                description = "Extra virtiofsd arguments for this share, after `virtiofsd.extraArgs`.";
              };
            };
          }
        )
      );
      default = [ ];
      description = "Host directories the guest mounts.";
    };

    devices = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            bus = mkOption {
              type = types.enum [
                "pci"
                "usb"
              ];
              description = "Bus of the device.";
            };
            path = mkOption {
              type = types.str;
              description = ''
                PCI address (`0000:01:00.0`) or, for usb, a qemu usb-host spec
                (`vendorid=0x1234,productid=0x5678`).
              '';
            };
            qemu.id = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "qemu device id.";
            };
            qemu.bus = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "qemu bus to attach to, such as a pcie-root-port id.";
            };
            qemu.deviceExtraArgs = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "Raw text appended to the qemu vfio-pci device options.";
            };
          };
        }
      );
      default = [ ];
      example = literalExpression ''
        [
          { bus = "pci"; path = "0000:01:00.0"; }
          { bus = "usb"; path = "vendorid=0xabcd,productid=0x0123"; }
        ]
      '';
      description = "Host PCI and USB devices passed through to the guest.";
    };

    vsock.cid = mkOption {
      type = types.nullOr types.int;
      default = null;
      description = ''
        The guest's vsock context id; setting it adds a vsock device. 0, 1 and 2 are reserved
        (2 is the host).
      '';
    };

    registerWithMachined = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Register the running VM with systemd-machined on the host (class vm, id `machineId`),
        so `machinectl` lists and stops it.
      '';
    };

    machineId = mkOption {
      type = types.nullOr types.str;
      default = machineIdOf hostName;
      defaultText = literalExpression ''a UUID-shaped string from sha256 "microvm.nix:''${config.networking.hostName}"'';
      example = "a67472e5-570e-5c8a-b18c-ae3c77701050";
      description = ''
        The VM's UUID: the guest's /etc/machine-id (without dashes) and `networking.hostId`,
        qemu's SMBIOS system UUID and the machined registration. null: the generator derives a
        UUIDv5 from the host name.
      '';
    };

    storeOnDisk = mkOption {
      type = types.bool;
      default = !lib.any (share: share.source == "/nix/store") cfg.shares;
      defaultText = literalExpression ''!lib.any (share: share.source == "/nix/store") config.microvm.shares'';
      description = ''
        Boot with a read-only disk image of the system's closure (`storeDisk`), unless the host's
        /nix/store is shared with the guest.
      '';
    };

    registerClosure = mkOption {
      type = types.bool;
      default = cfg.guest.enable;
      defaultText = literalExpression "config.microvm.guest.enable";
      description = ''
        Register the closure's store paths in the guest's Nix database at boot. It may not suit a
        persistent writable store overlay.
      '';
    };

    ephemeral = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Make every volume ephemeral by default (`volumes.*.ephemeral`), the one holding
        `writableStoreOverlay` included: each start is a clean machine, and nothing the guest
        wrote survives a stop.
      '';
    };

    writableStoreOverlay = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/nix/.rw-store";
      description = ''
        Guest path of a writable layer over the read-only /nix/store (an overlayfs), so Nix can
        build inside the VM. Put it on a volume; 9p and virtiofs do not work as the upper layer.
      '';
    };

    graphics.enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Graphics: a qemu display (`graphics.backend`), crosvm's vhost-user GPU device on the
        host's Wayland session (crosvm, and cloud-hypervisor built with `--gpu`) or vfkit's GUI.
        gtk and cocoa open a window and cannot run under systemd; headless can.
      '';
    };

    graphics.crosvmPackage = mkOption {
      type = types.package;
      default = pkgs.crosvm;
      defaultText = literalExpression "pkgs.crosvm";
      description = ''
        The crosvm whose vhost-user GPU device (`crosvm device gpu`) serves graphics on
        cloud-hypervisor. On crosvm the device is `crosvm.package`'s, as in microvm.nix.
      '';
    };

    graphics.backend = mkOption {
      type = types.enum [
        "gtk"
        "cocoa"
        "headless"
      ];
      default = if pkgs.stdenv.hostPlatform.isDarwin then "cocoa" else "gtk";
      defaultText = literalExpression ''if pkgs.stdenv.hostPlatform.isDarwin then "cocoa" else "gtk"'';
      description = "qemu display backend.";
    };

    graphics.socket = mkOption {
      type = types.str;
      default = "${hostName}-gpu.sock";
      defaultText = literalExpression ''"''${config.networking.hostName}-gpu.sock"'';
      description = "vhost-user socket of crosvm's GPU device (cloud-hypervisor, crosvm).";
    };

    graphics.vulkan = mkOption {
      type = types.nullOr (
        types.enum [
          "venus"
          "drm_native_context"
        ]
      );
      default = null;
      description = "Vulkan protocol of qemu's virtio-gpu.";
    };

    graphics.hostmem = mkOption {
      type = types.str;
      default = "256M";
      description = "Host memory window of qemu's virtio-gpu, with an M or G suffix.";
    };

    vmHostPackages = mkOption {
      type = types.pkgs;
      default = if cfg.cpu == null then pkgs else pkgs.buildPackages;
      defaultText = literalExpression "if config.microvm.cpu == null then pkgs else pkgs.buildPackages";
      example = literalExpression "nixpkgs.legacyPackages.aarch64-darwin";
      description = ''
        Packages of the machine that runs the VM: the hypervisor and the tools the runner
        calls come from here.
      '';
    };

    qemu.machine = mkOption {
      type = types.str;
      description = ''
        qemu machine type (`qemu-system-x86_64 -M help` lists them). It defaults (mkDefault) to
        `microvm` on x86_64 (`q35` when `hotplugMem` or graphics need a PC chipset) and `virt`
        on aarch64.
      '';
    };

    qemu.machineOpts = mkOption {
      type = types.nullOr (types.attrsOf types.str);
      default = null;
      description = "Replaces the machine options the generator computes.";
    };

    qemu.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Appended to qemu's arguments.";
    };

    qemu.serialConsole = mkOption {
      type = types.bool;
      default = true;
      description = "The guest's serial console on the runner's stdin and stdout.";
    };

    qemu.pcieRootPorts = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            id = mkOption {
              type = types.str;
              description = "Id of the root port.";
            };
            bus = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "Bus the port sits on.";
            };
            chassis = mkOption {
              type = types.nullOr types.int;
              default = null;
              description = "Chassis number.";
            };
            slot = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "Slot number.";
            };
            addr = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "Address on the parent bus.";
            };
          };
        }
      );
      default = [ ];
      example = literalExpression ''[ { id = "port0"; bus = "pcie.0"; chassis = 0; } ]'';
      description = ''
        PCIe root ports (q35), for devices that need a slot of their own or hotplug.
      '';
    };

    qemu.package = mkOption {
      type = types.package;
      default =
        if cfg.cpu == null && cfg.vmHostPackages.stdenv.hostPlatform.isLinux then
          cfg.vmHostPackages.qemu_kvm
        else
          cfg.vmHostPackages.qemu;
      defaultText = literalExpression ''
        if config.microvm.cpu == null && config.microvm.vmHostPackages.stdenv.hostPlatform.isLinux
        then config.microvm.vmHostPackages.qemu_kvm
        else config.microvm.vmHostPackages.qemu
      '';
      description = "qemu build.";
    };

    cloud-hypervisor.platformOEMStrings = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = literalExpression ''[ "io.systemd.credential:APIKEY=secret" ]'';
      description = ''
        Items of cloud-hypervisor's `--platform oem_strings=[…]`, without `oem_strings=` or
        brackets.
      '';
    };

    cloud-hypervisor.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra cloud-hypervisor arguments.";
    };

    cloud-hypervisor.package = mkOption {
      type = types.package;
      default =
        if cfg.graphics.enable then
          cfg.vmHostPackages.cloud-hypervisor-graphics or cfg.vmHostPackages.cloud-hypervisor
        else
          cfg.vmHostPackages.cloud-hypervisor;
      defaultText = literalExpression ''
        if config.microvm.graphics.enable then
          config.microvm.vmHostPackages.cloud-hypervisor-graphics or config.microvm.vmHostPackages.cloud-hypervisor
        else
          config.microvm.vmHostPackages.cloud-hypervisor
      '';
      description = ''
        cloud-hypervisor build. Graphics need one with `--gpu` (a vhost-user GPU device), which
        upstream cloud-hypervisor lacks: spectrum-os's build, which microvm.nix's overlay
        calls `cloud-hypervisor-graphics` and which is the default where the package set has
        it. `microvm-run` refuses to start graphics on a build without `--gpu`.
      '';
    };

    crosvm.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Appended to crosvm's arguments.";
    };

    crosvm.pivotRoot = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "crosvm's sandbox directory (`--pivot-root`), created before start.";
    };

    crosvm.package = mkOption {
      type = types.package;
      default = cfg.vmHostPackages.crosvm;
      defaultText = literalExpression "config.microvm.vmHostPackages.crosvm";
      description = "crosvm build.";
    };

    firecracker.cpu = mkOption {
      type = types.nullOr types.attrs;
      default = null;
      description = "Custom firecracker CPU template.";
    };

    firecracker.driveIoEngine = mkOption {
      type = types.enum [
        "Async"
        "Sync"
      ];
      default = "Async";
      description = "firecracker's I/O engine for every drive.";
    };

    firecracker.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Appended to firecracker's arguments.";
    };

    firecracker.extraConfig = mkOption {
      type = types.submodule { freeformType = jsonValue; };
      default = { };
      description = "Merged, recursively, into the firecracker configuration file.";
    };

    firecracker.package = mkOption {
      type = types.package;
      default = cfg.vmHostPackages.firecracker;
      defaultText = literalExpression "config.microvm.vmHostPackages.firecracker";
      description = "firecracker build.";
    };

    kvmtool.package = mkOption {
      type = types.package;
      default = cfg.vmHostPackages.kvmtool;
      defaultText = literalExpression "config.microvm.vmHostPackages.kvmtool";
      description = "kvmtool build.";
    };

    stratovirt.package = mkOption {
      type = types.package;
      default = cfg.vmHostPackages.stratovirt;
      defaultText = literalExpression "config.microvm.vmHostPackages.stratovirt";
      description = "stratovirt build.";
    };

    alioth.package = mkOption {
      type = types.package;
      default = cfg.vmHostPackages.alioth;
      defaultText = literalExpression "config.microvm.vmHostPackages.alioth";
      description = "alioth build.";
    };

    vfkit.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra vfkit arguments.";
    };

    vfkit.logLevel = mkOption {
      type = types.nullOr (
        types.enum [
          "debug"
          "info"
          "error"
        ]
      );
      default = "info";
      description = "vfkit's log level.";
    };

    vfkit.package = mkOption {
      type = types.package;
      default = cfg.vmHostPackages.vfkit;
      defaultText = literalExpression "config.microvm.vmHostPackages.vfkit";
      description = "vfkit build.";
    };

    vfkit.rosetta.enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Run x86_64 Linux binaries in an aarch64 guest with Rosetta (Apple Silicon hosts): the
        Rosetta share is attached and the guest's binfmt uses it.
      '';
    };

    vfkit.rosetta.install = mkOption {
      type = types.bool;
      default = false;
      description = "Let vfkit install Rosetta when it is missing.";
    };

    vfkit.rosetta.ignoreIfMissing = mkOption {
      type = types.bool;
      default = false;
      description = "Start without Rosetta when it is missing and cannot be installed.";
    };

    prettyProcnames = mkOption {
      type = types.bool;
      default = true;
      description = "Name the hypervisor process `microvm@<hostName>`.";
    };

    virtiofsd.inodeFileHandles = mkOption {
      type = types.nullOr (
        types.enum [
          "never"
          "prefer"
          "mandatory"
        ]
      );
      default = "prefer";
      description = ''
        When virtiofsd refers to inodes by file handles instead of open files; file handles
        avoid "too many open files" on large trees (e.g. ZFS).
      '';
    };

    virtiofsd.threadPoolSize = mkOption {
      type = types.oneOf [
        types.str
        types.ints.unsigned
      ];
      default = "`nproc`";
      description = ''
        Worker threads per virtiofsd: a number, or "`nproc`" for the host's CPU count at start.
      '';
    };

    virtiofsd.group = mkOption {
      type = types.nullOr types.str;
      default = "kvm";
      description = ''
        Group owning virtiofsd's sockets; null: the group of the user that runs virtiofsd.
      '';
    };

    virtiofsd.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments for every virtiofsd, before each share's own.";
    };

    virtiofsd.package = mkOption {
      type = types.package;
      default = cfg.vmHostPackages.virtiofsd;
      defaultText = literalExpression "config.microvm.vmHostPackages.virtiofsd";
      description = "virtiofsd build.";
    };

    codegen.package = mkOption {
      type = types.package;
      default = microvmLib.codegenPackage cfg.vmHostPackages.buildPackages;
      defaultText = literalExpression "config.microvm.vmHostPackages.buildPackages.microvm-codegen";
      description = ''
        The generator that writes the runners (this project's `microvm-codegen`; not a
        microvm.nix option).
      '';
    };

    # Not read-only, as in microvm.nix: configurations replace runners (`lib.mkForce`).
    runner = mkOption {
      type = types.lazyAttrsOf types.package;
      description = ''
        This guest's runner for each hypervisor (`runner.<hypervisor>`). Guest-side settings
        still follow `microvm.hypervisor`, so prefer `declaredRunner`. The module defines every
        entry; replace one with `lib.mkForce`, as in microvm.nix.
      '';
    };

    runnerSpec = mkOption {
      type = types.lazyAttrsOf types.raw;
      readOnly = true;
      description = ''
        The runner spec (the JSON document `microvm-codegen` reads, as an attrset) of each
        runner, for inspection: `nix eval --json .#nixosConfigurations.<name>.config.microvm.runnerSpec.qemu`.
        Not a microvm.nix option.
      '';
    };

    declaredRunner = mkOption {
      type = types.package;
      default = cfg.runner.${cfg.hypervisor};
      defaultText = literalExpression "config.microvm.runner.\${config.microvm.hypervisor}";
      description = ''
        The runner of `microvm.hypervisor`: `nix run .#nixosConfigurations.<name>.config.microvm.declaredRunner`
        starts the VM, and the host module installs it. A definition replaces it, as in
        microvm.nix (a wrapper around `runner.<hypervisor>`, say).
      '';
    };

    binScripts = mkOption {
      type = types.attrsOf types.lines;
      default = { };
      description = ''
        Extra scripts installed as the runner's `bin/<name>`. The generator writes tap-up,
        macvtap-up, pci-setup, virtiofsd-run and the others itself; these names are taken.
      '';
    };

    storeDiskType = mkOption {
      type = types.enum [
        "squashfs"
        "erofs"
      ];
      description = ''
        Filesystem of the store disk: erofs (faster) by default, squashfs (smaller) where the
        hardened profile forbids erofs.
      '';
    };

    storeDiskErofsFlags = mkOption {
      type = types.listOf types.str;
      default = [
        "-zlz4hc"
      ]
      ++ lib.optional (kernelAtLeast "5.16") "-Eztailpacking"
      ++ lib.optional (kernelAtLeast "6.1") "-Efragments";
      defaultText = literalExpression ''
        [ "-zlz4hc" ]
        ++ lib.optional (kernelAtLeast "5.16") "-Eztailpacking"
        ++ lib.optional (kernelAtLeast "6.1") "-Efragments"
      '';
      description = ''
        mkfs.erofs flags. "-Ededupe" makes smaller images but forces a single-threaded build.
      '';
    };

    storeDiskSquashfsFlags = mkOption {
      type = types.listOf types.str;
      default = [
        "-c"
        "zstd"
        "-j"
        "$NIX_BUILD_CORES"
      ];
      description = "gensquashfs flags.";
    };

    systemSymlink = mkOption {
      type = types.bool;
      default = !cfg.storeOnDisk;
      defaultText = literalExpression "!config.microvm.storeOnDisk";
      description = ''
        Link the system's toplevel as the runner's `share/microvm/system` (`microvm -l` reads
        it). With a store disk it would keep the uncompressed closure alive, so it is off there.
      '';
    };

    credentialFiles = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = literalExpression ''{ SOPS_AGE_KEY = "/run/secrets/guest-age-key"; }'';
      description = ''
        systemd credentials for the guest: name to host file (qemu). The files stay where they
        are; they are not copied into the store.
      '';
    };
  };

  config = {
    microvm.qemu.machine = lib.mkDefault (
      if pkgs.stdenv.hostPlatform.isAarch64 then
        "virt"
      else if cfg.hotplugMem > 0 || cfg.graphics.enable then
        "q35"
      else
        "microvm"
    );
  };
}
