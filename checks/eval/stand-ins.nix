# Stand-ins for NixOS and nixpkgs, so the guest module evaluates with nixpkgs' lib alone
# (tier 4 of the tests: `lib.evalModules`, Debian's Nix, no nixpkgs, nothing built).
#
# NixOS options the module reads, declared loosely (every other NixOS option a module sets is
# accepted as a free-form value: the top-level freeformType):
#   networking.hostName                      str, "nixos" (the NixOS default)
#   networking.useNetworkd                   bool, false
#   networking.hostId                        nullOr str, null (free-form, it would recurse through
#                                            the host name)
#   boot.kernelParams                        list of str, []
#   boot.kernelPackages.kernel               the stand-in kernel (below)
#   boot.initrd.systemd.enable               bool, false
#   system.build.toplevel                    a stand-in derivation; evaluating it throws on failed
#                                            assertions, as NixOS's toplevel does
#   system.build.initialRamdisk              a stand-in derivation
#   system.boot.loader.kernelFile            "bzImage" / "Image"
#   system.boot.loader.initrdFile            "initrd"
#   system.nixos.label                       "stand-in"
#   system.switch.enable                     bool, true
#   security.virtualisation.flushL1DataCache nullOr str, null
#   nix.enable                               bool, true
#   nix.package                              a stand-in derivation
#   nix.optimise.automatic                   bool, false
#   nix.settings.auto-optimise-store         bool, false
#   services.openssh.enable                  bool, false
#   assertions, warnings                     as in NixOS
#
# Stand-in pkgs: `_type = "pkgs"`; every package is a derivation-like attrset whose output is
# `prefix`, so `${pkgs.socat}/bin/socat` is `<prefix>/bin/socat` (with the default "/usr" that is
# Debian's own program); builders (runCommand, writeText, …) return derivation-like attrsets at
# "/stand-in/<name>" without building anything. `stdenv.hostPlatform` describes `system`.
{
  lib,
  prefix ? "/usr",
}:

let
  inherit (lib) mkOption types;

  derivation' =
    name: outPath: extra:
    let
      self = {
        type = "derivation";
        inherit name outPath;
        drvPath = "/stand-in/${name}.drv";
        outputName = "out";
        out = self;
      }
      // extra;
    in
    self;

  package =
    name:
    let
      self = derivation' name prefix {
        override = _: self;
        overrideAttrs = _: self;
        version = "0";
        meta.mainProgram = name;
      };
    in
    self;

  built = name: derivation' name "/stand-in/${name}" { };

  platforms = {
    x86_64-linux = {
      system = "x86_64-linux";
      isx86_64 = true;
      isAarch64 = false;
      isLinux = true;
      isDarwin = false;
      qemuArch = "x86_64";
      linux-kernel.target = "bzImage";
    };
    aarch64-linux = {
      system = "aarch64-linux";
      isx86_64 = false;
      isAarch64 = true;
      isLinux = true;
      isDarwin = false;
      qemuArch = "aarch64";
      linux-kernel.target = "Image";
    };
    aarch64-darwin = {
      system = "aarch64-darwin";
      isx86_64 = false;
      isAarch64 = true;
      isLinux = false;
      isDarwin = true;
      qemuArch = "aarch64";
      linux-kernel.target = "Image";
    };
  };

  packageNames = [
    "alioth"
    "bash"
    "btrfs-progs"
    "cloud-hypervisor"
    "coreutils"
    "crosvm"
    "curl"
    "dosfstools"
    "e2fsprogs"
    "erofs-utils"
    "expect"
    "firecracker"
    "iproute2"
    "kmod"
    "kvmtool"
    "microvm-codegen"
    "mtools"
    "nix"
    "openssh"
    "qemu"
    "qemu_kvm"
    "socat"
    "squashfs-tools-ng"
    "stratovirt"
    "systemd"
    "util-linux"
    "vfkit"
    "virtiofsd"
    "waypipe"
    "wayland-proxy-virtwl"
    "xfsprogs"
  ];

  # The package set of `system`.
  pkgsFor =
    system:
    let
      self = lib.genAttrs packageNames package // {
        _type = "pkgs";
        inherit lib;
        buildPackages = self;
        stdenv.hostPlatform = platforms.${system};
        runCommand =
          name: env: _script:
          built name
          // {
            passthru = env.passthru or { };
            meta = env.meta or { };
          }
          // (env.passthru or { });
        runCommandLocal = self.runCommand;
        writeText = name: _text: built name;
        writeShellScriptBin =
          name: text:
          built name
          // {
            meta.mainProgram = name;
            # Kept so tests can read what a wrapper does.
            passthru.text = text;
          };
        closureInfo = _: built "closure-info";
        callPackage = _: _: package "called";
      };
    in
    self;

  # A kernel: `dir` holds `file`; `vmlinux` is the uncompressed image of kernel.dev.
  kernel =
    {
      dir ? "/stand-in/kernel",
      file ? "bzImage",
      version ? "6.12.0",
    }:
    derivation' "linux" dir {
      inherit version;
      target = file;
      dev = derivation' "linux-dev" "${dir}-dev" { };
    };

  # The NixOS options the module reads (see the list above).
  nixosModule =
    { config, pkgs, ... }:
    let
      failed = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
      option = type: default: mkOption { inherit type default; };
    in
    {
      freeformType = types.lazyAttrsOf types.anything;

      options = {
        assertions = option (types.listOf types.unspecified) [ ];
        warnings = option (types.listOf types.str) [ ];
        networking.hostName = option types.str "nixos";
        networking.useNetworkd = option types.bool false;
        networking.hostId = option (types.nullOr types.str) null;
        boot.kernelParams = option (types.listOf types.str) [ ];
        boot.kernelPackages = option types.raw {
          kernel = kernel { file = pkgs.stdenv.hostPlatform.linux-kernel.target; };
        };
        boot.initrd.systemd.enable = option types.bool false;
        system.build.toplevel = option types.raw (
          if failed != [ ] then
            throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
          else
            built "nixos-system-${config.networking.hostName}"
        );
        system.build.initialRamdisk = option types.raw (built "initrd");
        system.boot.loader.kernelFile = option types.str pkgs.stdenv.hostPlatform.linux-kernel.target;
        system.boot.loader.initrdFile = option types.str "initrd";
        system.nixos.label = option types.str "stand-in";
        system.switch.enable = option types.bool true;
        security.virtualisation.flushL1DataCache = option (types.nullOr types.str) null;
        nix.enable = option types.bool true;
        nix.package = option types.raw (package "nix");
        nix.optimise.automatic = option types.bool false;
        nix.settings.auto-optimise-store = option types.bool false;
        services.openssh.enable = option types.bool false;
      };
    };

  # Evaluates a guest: the microvm module, the stand-ins and `modules`, for a guest of `system`
  # whose runner runs on `hostSystem`.
  evalGuest =
    {
      modules,
      system ? "x86_64-linux",
      hostSystem ? system,
    }:
    lib.evalModules {
      modules = [
        ../../nixos-modules/microvm
        nixosModule
        {
          _module.args.pkgs = pkgsFor system;
          microvm.vmHostPackages = lib.mkIf (hostSystem != system) (pkgsFor hostSystem);
        }
      ]
      ++ modules;
    };
in
{
  inherit
    pkgsFor
    kernel
    nixosModule
    evalGuest
    ;
}
