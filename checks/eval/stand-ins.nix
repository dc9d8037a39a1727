# Stand-ins for NixOS and nixpkgs, so the guest module evaluates with nixpkgs' lib alone
# (tier 4 of the tests: `lib.evalModules`, Debian's Nix, no nixpkgs, nothing built).
#
# NixOS options: `nixosModule` declares every NixOS option that nixos-modules/{microvm,host},
# examples/, flake.nix, flake-template/, checks/default.nix and checks/eval read or set (lib/
# evaluates no modules), each with the type nixpkgs gives it, grouped by the nixpkgs file that
# declares it (named in the comment above each group). There is no freeform catch-all: a misspelt path fails with "The
# option … does not exist", a value of the wrong type fails the type check, and lists defined in
# several modules are concatenated, all as in NixOS. Where a NixOS submodule is large, the
# sub-options our modules set are declared (typed as NixOS types them); where NixOS itself
# declares a freeformType (system.build, services.logind.settings.Login, nix.settings,
# services.openssh.settings) so does the stand-in, with the same value type.
#
# Only declarations: what the NixOS modules then do with these options (their `config`
# sections) is not reproduced, except for the values NixOS derives inside the submodules
# themselves (users.users.<name>.name, environment.etc.<name>.target and .source) and the
# stand-in values of system.build.toplevel (a derivation-like attrset; evaluating it throws on
# failed assertions, as NixOS's toplevel does) and system.build.initialRamdisk.
#
# Types nixpkgs defines outside lib are rebuilt from lib with the same check and merge:
# `unitOption` and `unitNameType` (nixos/lib/systemd-unit-options.nix, nixos/lib/systemd-lib.nix).
# The checks nixpkgs adds to some unit sections with `addCheck` (which keys a [Service] or
# [Network] section may hold, and their values) are left out; they do not change how
# definitions merge.
#
# Stand-in pkgs: `_type = "pkgs"`; every package is a derivation-like attrset whose output is
# `prefix`, so `${pkgs.socat}/bin/socat` is `<prefix>/bin/socat` (with the default "/usr" that is
# Debian's own program); builders (runCommand, writeText, …) return derivation-like attrsets at
# "/stand-in/<name>" without building anything. `stdenv.hostPlatform` describes `system`.
# With `realDrvPaths`, each one's drvPath is that of a real (never built) derivation of the same
# name, for `nix flake check --no-build`, which reads drvPaths from the store.
{
  lib,
  prefix ? "/usr",
  realDrvPaths ? false,
}:

let
  inherit (lib) mkOption types;

  derivation' =
    name: outPath: extra:
    let
      self = {
        type = "derivation";
        inherit name outPath;
        drvPath =
          if realDrvPaths then
            (builtins.derivation {
              inherit name;
              system = "x86_64-linux";
              builder = "/bin/sh";
            }).drvPath
          else
            "/stand-in/${name}.drv";
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
    "github-runner"
    "gitlab-runner"
    "iproute2"
    "jq"
    "kmod"
    "kvmtool"
    "microvm-codegen"
    "mtools"
    "nix"
    "nixfmt"
    "openssh"
    "python3"
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
        writeShellScript =
          name: text:
          built name
          // {
            # Kept so tests can read what a script does.
            passthru.text = text;
            inherit text;
          };
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

  # Types nixpkgs defines outside lib, rebuilt from lib with the same check and merge.
  systemdTypes = {
    # nixos/lib/systemd-unit-options.nix `unitOption`: the value of one key of a unit section.
    # Definitions that are all lists are concatenated (repeatable keys); otherwise they must
    # all be equal; a mix of lists and non-lists is an error.
    unitOption = lib.mkOptionType {
      name = "systemd option";
      merge =
        loc: defs:
        let
          defs' = lib.filterOverrides defs;
        in
        if builtins.isList (builtins.head defs').value then
          lib.concatMap (
            def:
            if builtins.isList def.value then
              def.value
            else
              throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs defs'}"
          ) defs'
        else
          lib.mergeEqualOption loc defs';
    };

    # nixos/lib/systemd-lib.nix `unitNameType`
    unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  };

  inherit (systemdTypes) unitOption unitNameType;

  option = type: default: mkOption { inherit type default; };
  enableOption = option types.bool false;

  # nixos/lib/systemd-unit-options.nix: `sharedOptions` and `commonUnitOptions`, the options of
  # every unit (those our modules set), and the [Service] and [Mount] options of
  # `stage2ServiceOptions` and `stage2MountOptions`.
  unitOptions = {
    enable = option types.bool true;
    overrideStrategy = option (types.enum [
      "asDropinIfExists"
      "asDropin"
    ]) "asDropinIfExists";
    wantedBy = option (types.listOf unitNameType) [ ];
    requiredBy = option (types.listOf unitNameType) [ ];
    unitConfig = option (types.attrsOf unitOption) { };
    description = option types.singleLineStr "";
    after = option (types.listOf unitNameType) [ ];
    before = option (types.listOf unitNameType) [ ];
    conflicts = option (types.listOf unitNameType) [ ];
  };
  serviceOptions = unitOptions // {
    # nixpkgs: types.addCheck (types.attrsOf unitOption) checkService
    serviceConfig = option (types.attrsOf unitOption) { };
    script = option types.lines "";
    path = option (types.listOf (
      types.oneOf [
        types.package
        types.str
      ]
    )) [ ];
    environment = option (types.attrsOf (
      types.nullOr (
        types.oneOf [
          types.str
          types.path
          types.package
        ]
      )
    )) { };
  };
  # nixpkgs: timerConfig is types.addCheck (types.attrsOf unitOption) checkTimer
  timerOptions = unitOptions // {
    timerConfig = mkOption { type = types.attrsOf unitOption; };
  };
  mountOptions = unitOptions // {
    what = mkOption { type = types.str; };
    where = mkOption { type = types.str; };
    type = option types.str "";
    options = option types.commas "";
    mountConfig = option (types.attrsOf unitOption) { };
  };
  unitsOf = options: types.attrsOf (types.submodule { inherit options; });

  # The NixOS options our modules use, one module per nixpkgs file that declares them.
  nixosModules = {
    # nixos/modules/misc/assertions.nix
    assertions.options = {
      assertions = option (types.listOf types.unspecified) [ ];
      warnings = option (types.listOf types.str) [ ];
    };

    # nixos/modules/system/build.nix: NixOS's own freeform submodule.
    build.options.system.build = mkOption {
      default = { };
      type = types.submoduleWith {
        modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
      };
    };

    # nixos/modules/system/activation/top-level.nix
    # NixOS's toplevel derivation depends on (nearly) every option's value, so evaluating it
    # fails on a value of the wrong type or definitions that do not merge, wherever they are.
    # The stand-in's value forces the values of all the NixOS options declared here for the
    # same effect (not nixpkgs.hostPlatform, which has no default, nor system.build, which holds
    # the toplevel itself).
    top-level =
      { config, pkgs, ... }:
      let
        failed = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
        nixosValues = removeAttrs config [
          "_module"
          "microvm"
          "nixpkgs"
          "system"
        ]
        // {
          system = removeAttrs config.system [ "build" ];
        };
      in
      {
        options = {
          system.build.toplevel = mkOption {
            type = types.package;
            readOnly = true;
          };
          system.boot.loader.kernelFile = option types.str pkgs.stdenv.hostPlatform.linux-kernel.target;
          system.boot.loader.initrdFile = option types.str "initrd";
        };
        config.system.build.toplevel =
          if failed != [ ] then
            throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
          else
            builtins.deepSeq nixosValues (built "nixos-system-${config.networking.hostName}");
      };

    # nixos/modules/system/boot/kernel.nix
    # boot.kernelPackages: nixpkgs also applies `extend`, adding boot.kernelPatches to the
    # kernel; the stand-in kernel has no patches to add.
    kernel =
      { pkgs, ... }:
      {
        options.boot = {
          kernelPackages = option types.raw {
            kernel = kernel { file = pkgs.stdenv.hostPlatform.linux-kernel.target; };
          };
          kernelParams = option (types.listOf (
            types.strMatching ''([^"[:space:]]|"[^"]*")+''
            // {
              name = "kernelParam";
              description = "string, with spaces inside double quotes";
            }
          )) [ ];
          kernelModules = option (types.listOf types.str) [ ];
          initrd.availableKernelModules = option (types.listOf types.str) [ ];
          initrd.kernelModules = option (types.listOf types.str) [ ];
        };
      };

    # nixos/modules/system/boot/modprobe.nix
    modprobe.options.boot.blacklistedKernelModules = option (types.listOf types.str) [ ];

    # nixos/modules/system/boot/stage-1.nix: fileSystems.<name>.neededForBoot is declared there
    # (see filesystems, below); the initrd itself is a stand-in.
    stage-1.config.system.build.initialRamdisk = built "initrd";

    # nixos/modules/system/boot/stage-2.nix
    stage-2.options.boot.postBootCommands = option types.lines "";

    # nixos/modules/system/boot/systemd/initrd.nix
    initrd-systemd.options.boot.initrd.systemd.enable = enableOption;

    # nixos/modules/system/boot/systemd/tpm2.nix (nixpkgs' defaults depend on the TPM support
    # of the systemd package; the stand-ins take those of a systemd without it)
    tpm2.options = {
      boot.initrd.systemd.tpm2.enable = enableOption;
      systemd.tpm2.enable = enableOption;
    };

    # nixos/modules/tasks/swraid.nix (nixpkgs: on by default for stateVersion < 23.11)
    swraid.options.boot.swraid.enable = enableOption;

    # nixos/modules/system/boot/loader/grub/grub.nix (nixpkgs: default !boot.isContainer)
    grub.options.boot.loader.grub.enable = option types.bool true;

    # nixos/modules/tasks/filesystems.nix (coreFileSystemOpts, fileSystemOpts),
    # nixos/modules/tasks/filesystems/overlayfs.nix (overlayOpts) and
    # nixos/modules/system/boot/stage-1.nix (neededForBoot): the sub-options our modules set.
    # nixpkgs also filters out entries with enable = false, which ours do not set.
    filesystems =
      let
        isNonEmpty = s: builtins.match "[ \t\n]*" s == null;
        nonEmptyStr = types.addCheck types.str isNonEmpty // {
          description = "${types.str.description} (with check: non-empty)";
        };
      in
      {
        options.fileSystems = mkOption {
          default = { };
          type = types.attrsOf (
            types.submodule {
              options = {
                device = option (types.nullOr nonEmptyStr) null;
                fsType = option nonEmptyStr "auto";
                options = option (types.nonEmptyListOf nonEmptyStr) [ "defaults" ];
                noCheck = option types.bool false;
                neededForBoot = option types.bool false;
                overlay = {
                  lowerdir = option (types.nullOr (
                    types.nonEmptyListOf (types.either types.str types.pathInStore)
                  )) null;
                  upperdir = option (types.nullOr types.str) null;
                  # no default in nixpkgs either
                  workdir = mkOption { type = types.nullOr types.str; };
                };
              };
            }
          );
        };
      };

    # nixos/modules/system/boot/systemd.nix, with the unit types of nixos/lib/systemd-types.nix
    systemd.options.systemd = {
      packages = option (types.listOf types.package) [ ];
      generators = option (types.attrsOf types.path) { };
      services = option (unitsOf serviceOptions) { };
      sockets = option (unitsOf unitOptions) { };
      targets = option (unitsOf unitOptions) { };
      timers = option (unitsOf timerOptions) { };
      mounts = option (types.listOf (types.submodule { options = mountOptions; })) [ ];
    };

    # nixos/modules/system/boot/systemd/tmpfiles.nix
    tmpfiles.options.systemd.tmpfiles.rules = option (types.listOf types.str) [ ];

    # nixos/modules/system/boot/networkd.nix: `networkOptions`, the sub-options our modules set.
    # nixpkgs: networkConfig is types.addCheck (types.attrsOf unitOption) check.network.sectionNetwork
    networkd.options.systemd.network = {
      networks = option (types.attrsOf (
        types.submodule {
          options = {
            matchConfig = option (types.attrsOf unitOption) { };
            networkConfig = option (types.attrsOf unitOption) { };
          };
        }
      )) { };
      wait-online.enable = option types.bool true;
    };

    # nixos/modules/system/boot/systemd/logind.nix: NixOS's own freeform submodule.
    logind.options.services.logind.settings.Login = mkOption {
      default = { };
      type = types.submodule {
        freeformType = types.attrsOf unitOption;
        options.KillUserProcesses = option types.bool false;
      };
    };

    # nixos/modules/system/etc/etc.nix: the sub-options our modules set, and the target and
    # source the submodule derives.
    etc =
      { pkgs, ... }:
      {
        options.environment.etc = option (types.attrsOf (
          types.submodule (
            { name, config, ... }:
            {
              options = {
                enable = option types.bool true;
                target = mkOption { type = types.str; };
                text = option (types.nullOr types.lines) null;
                source = mkOption { type = types.path; };
              };
              config = {
                target = lib.mkDefault name;
                source = lib.mkIf (config.text != null) (
                  pkgs.writeText "etc-${baseNameOf name}" config.text
                );
              };
            }
          )
        )) { };
      };

    # nixos/modules/config/system-path.nix
    system-path.options.environment.systemPackages = option (types.listOf types.package) [ ];

    # nixos/modules/tasks/network-interfaces.nix (hostName's default is
    # system.nixos.distroId, "nixos")
    network-interfaces.options.networking = {
      hostName = option (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
      hostId = option (types.nullOr types.str) null;
      useNetworkd = option types.bool false;
    };

    # nixos/modules/config/users-groups.nix: `userOpts`, the sub-options our modules set.
    users-groups.options.users.users = option (types.attrsOf (
      types.submodule (
        { name, ... }:
        {
          options = {
            name = mkOption {
              type = types.passwdEntry types.str;
              apply =
                x:
                assert (
                  builtins.stringLength x < 32 || abort "Username '${x}' is longer than 31 characters which is not allowed!"
                );
                x;
            };
            isSystemUser = option types.bool false;
            isNormalUser = option types.bool false;
            group = mkOption {
              type = types.str;
              apply =
                x:
                assert (
                  builtins.stringLength x < 32 || abort "Group name '${x}' is longer than 31 characters which is not allowed!"
                );
                x;
              default = "";
            };
            password = option (types.nullOr types.str) null;
          };
          config.name = lib.mkDefault name;
        }
      )
    )) { };

    # nixos/modules/config/users-groups.nix: `groupOpts`, the sub-options our modules set.
    users-groups-groups.options.users.groups = option (types.attrsOf (
      types.submodule (
        { name, ... }:
        {
          options = {
            name = mkOption { type = types.passwdEntry types.str; };
            gid = option (types.nullOr types.int) null;
          };
          config.name = lib.mkDefault name;
        }
      )
    )) { };

    # nixos/modules/security/pam.nix (`limitsType`)
    pam.options.security.pam.loginLimits = option (types.listOf (
      types.submodule {
        options = {
          domain = mkOption { type = types.str; };
          type = option (types.enum [
            "-"
            "hard"
            "soft"
          ]) "-";
          item = mkOption {
            type = types.enum [
              "core"
              "data"
              "fsize"
              "memlock"
              "nofile"
              "rss"
              "stack"
              "cpu"
              "nproc"
              "as"
              "maxlogins"
              "maxsyslogins"
              "priority"
              "locks"
              "sigpending"
              "msgqueue"
              "nice"
              "rtprio"
            ];
          };
          value = mkOption {
            type = types.oneOf [
              types.str
              types.int
            ];
          };
        };
      }
    )) [ ];

    # nixos/modules/security/misc.nix
    security-misc.options.security.virtualisation.flushL1DataCache = option (types.nullOr (
      types.enum [
        "never"
        "cond"
        "always"
      ]
    )) null;

    # nixos/modules/misc/version.nix and nixos/modules/misc/label.nix (the label nixpkgs
    # computes from the version; the stand-in's is fixed). stateVersion: nixpkgs also warns
    # when it is left at its default.
    version.options.system = {
      nixos.label = option (types.strMatching "[a-zA-Z0-9:_\\.-]*") "stand-in";
      stateVersion = option types.str lib.trivial.release;
    };

    # nixos/modules/misc/documentation.nix
    documentation.options.documentation.enable = option types.bool true;

    # nixos/modules/system/activation/switchable-system.nix
    switchable-system.options.system.switch.enable = option types.bool true;

    # nixos/modules/services/system/nix-daemon.nix
    nix-daemon.options.nix = {
      enable = option types.bool true;
      package = option types.package (package "nix");
    };

    # nixos/modules/config/nix.nix: nix.settings, NixOS's own freeform submodule
    # (`semanticConfType`).
    nix.options.nix.settings = mkOption {
      default = { };
      type = types.submodule {
        freeformType =
          let
            confAtom = types.nullOr (
              types.oneOf [
                types.bool
                types.int
                types.float
                types.str
                types.path
                types.package
              ]
            );
          in
          types.attrsOf (types.either confAtom (types.listOf confAtom));
        options.auto-optimise-store = option types.bool false;
      };
    };

    # nixos/modules/services/misc/nix-optimise.nix
    nix-optimise.options.nix.optimise.automatic = option types.bool false;

    # nixos/modules/services/networking/ssh/sshd.nix: settings is NixOS's own freeform
    # submodule, whose freeform values are those of pkgs.formats.keyValue (null, bool, int,
    # float or string).
    sshd.options.services.openssh = {
      enable = enableOption;
      settings = mkOption {
        default = { };
        type = types.submodule {
          freeformType = types.attrsOf (
            types.nullOr (
              types.oneOf [
                types.bool
                types.int
                types.float
                types.str
              ]
            )
          );
          options.PermitRootLogin = option (types.enum [
            "yes"
            "without-password"
            "prohibit-password"
            "forced-commands-only"
            "no"
          ]) "prohibit-password";
        };
      };
    };

    # nixos/modules/services/continuous-integration/github-runner/options.nix: the sub-options
    # nixos-modules/host/ci-runners.nix sets.
    github-runner.options.services.github-runners = option (types.attrsOf (
      types.submodule (
        { name, ... }:
        {
          options = {
            enable = option types.bool false;
            url = mkOption { type = types.str; };
            tokenFile = mkOption { type = types.path; };
            name = option (types.nullOr types.str) name;
            extraLabels = option (types.listOf types.str) [ ];
            replace = option types.bool false;
            ephemeral = option types.bool false;
            workDir = option (types.nullOr types.str) null;
          };
        }
      )
    )) { };

    # nixos/modules/services/continuous-integration/gitlab-runner.nix: the sub-options
    # nixos-modules/host/ci-runners.nix sets (and reads: package).
    gitlab-runner =
      { pkgs, ... }:
      {
    options.services.gitlab-runner = {
      enable = enableOption;
      # nixpkgs: mkPackageOption pkgs "gitlab-runner"
      package = mkOption {
        type = types.package;
        default = pkgs.gitlab-runner;
      };
      services = option (types.attrsOf (
        types.submodule {
          options = {
            authenticationTokenConfigFile = option (types.nullOr types.path) null;
            buildsDir = option (types.nullOr types.path) null;
            executor = option types.str "docker";
            limit = option types.int 0;
          };
        }
      )) { };
    };
      };

    # nixos/modules/services/ttys/getty.nix
    getty.options.services.getty.autologinUser = option (types.nullOr types.str) null;

    # nixos/modules/virtualisation/rosetta.nix
    rosetta.options.virtualisation.rosetta.enable = enableOption;

    # nixos/modules/misc/nixpkgs.nix (the stand-in package set comes from evalGuest's
    # `system`, not from this option)
    nixpkgs.options.nixpkgs.hostPlatform = mkOption {
      type = types.either types.str types.attrs;
      apply = lib.systems.elaborate;
    };
  };

  # One module importing them all; each is named in error messages by its nixpkgs file's name.
  nixosModule.imports = lib.mapAttrsToList (name: module: {
    _file = "checks/eval/stand-ins.nix (nixos/modules: ${name})";
    imports = [ module ];
  }) nixosModules;

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
