# The host module (`nixosModules.host`): runs microVMs as systemd services. The units come from
# `microvm-codegen host` (a host spec built here from the options, turned into a package by a
# plain derivation); the module installs them, creates the `microvm` user and the state
# directory, and ships the `microvm` command.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.microvm;
  hostCfg = cfg.host;
  codegen = hostCfg.codegenPackage;

  # The user the hypervisors run as, and its group (which owns /dev/kvm).
  user = "microvm";
  group = "kvm";
  stateDir = toString cfg.stateDir;

  # A VM's guest configuration with the host's `overrides` (./fleet.nix) applied.
  evaluateGuest =
    name: vm:
    let
      overrides = lib.filterAttrs (_: value: value != null) vm.overrides;
      withOverrides =
        evaluated:
        if overrides == { } then
          evaluated
        else
          evaluated.extendModules { modules = [ overridesModule ]; };
      overridesModule.microvm = lib.mapAttrs (_: lib.mkOverride 50) overrides;
    in
    if vm.flake != null then
      (withOverrides vm.flake.nixosConfigurations.${name}).config
    else if vm.evaluatedConfig != null then
      (withOverrides vm.evaluatedConfig).config
    else if vm.config != null then
      (hostCfg.evalGuest {
        inherit name;
        vm = vm // {
          extraModules = vm.extraModules ++ lib.optional (overrides != { }) overridesModule;
        };
      }).config
    else
      throw "microvm.vms.${name}: set config, evaluatedConfig or flake";
  guestOf = name: _: hostCfg.guests.${name};

  # Directories the hypervisor writes outside its state directory: those of absolute volume
  # images and the sources of 9p shares (the hypervisor serves those itself).
  writablePaths =
    guest:
    let
      absolute = p: lib.hasPrefix "/" p;
      volumeDirs = map (v: builtins.dirOf v.image) (
        builtins.filter (v: absolute v.image) guest.microvm.volumes
      );
      shareSources = map (s: s.source) (
        builtins.filter (
          s: s.proto == "9p" && absolute s.source && s.source != "/nix/store"
        ) guest.microvm.shares
      );
    in
    lib.unique (volumeDirs ++ shareSources);

  declaredVm =
    name: vm:
    let
      guest = guestOf name vm;
    in
    {
      runner = "${guest.microvm.declaredRunner}";
      toplevel = if vm.config != null then "${guest.system.build.toplevel}" else null;
      flake = if vm.flake != null then "${vm.flake}" else null;
      inherit (vm) updateFlake restartIfChanged;
      writablePaths = writablePaths guest;
      # microvm.readiness (the guest module's services.nix): the unit becomes Type=notify.
      notify = guest.microvm.readiness.enable or false;
    };

  spec = {
    specVersion = 1;
    inherit stateDir user group;
    startupTimeout = hostCfg.startupTimeout;
    shutdownTimeout = hostCfg.shutdownTimeout;
    inherit (hostCfg) useNotifySockets;
    autostart = lib.unique cfg.autostart;
    vms = lib.mapAttrs declaredVm cfg.vms;
    tools = {
      bash = "${pkgs.bash}/bin/bash";
      ln = "${pkgs.coreutils}/bin/ln";
      rm = "${pkgs.coreutils}/bin/rm";
      mkdir = "${pkgs.coreutils}/bin/mkdir";
      chown = "${pkgs.coreutils}/bin/chown";
      readlink = "${pkgs.coreutils}/bin/readlink";
      microvm = "${codegen}/bin/microvm";
    };
  };

  package =
    pkgs.runCommand "microvm-host"
      {
        nativeBuildInputs = [ codegen ];
        passthru.spec = spec;
      }
      ''
        microvm-codegen host --spec ${pkgs.writeText "microvm-host-spec.json" (builtins.toJSON spec)} --out $out
      '';

  # The `microvm` command, pointed at this host's state directory and told who runs the VMs
  # (`create` hands a new VM's directory to them).
  command = pkgs.writeShellScriptBin "microvm" ''
    export MICROVM_STATE_DIR="''${MICROVM_STATE_DIR:-${stateDir}}"
    export MICROVM_USER=${lib.escapeShellArg user} MICROVM_GROUP=${lib.escapeShellArg group}
    exec ${codegen}/bin/microvm "$@"
  '';

  # Share sources of declared VMs are created for them; relative ones live in the VM's state
  # directory, where the hypervisor resolves them.
  shareDirs = lib.concatLists (
    lib.mapAttrsToList (
      name: vm:
      map (
        s:
        if lib.hasPrefix "/" s.source then
          s.source
        else
          "${stateDir}/${name}/${s.source}"
      ) (builtins.filter (s: s.source != "/nix/store") (guestOf name vm).microvm.shares)
    ) cfg.vms
  );
in
{
  imports = [
    ./options.nix
    ./ci-runners.nix
    ./fleet.nix
  ];

  config = lib.mkIf hostCfg.enable {
    microvm.host.guests = lib.mapAttrs evaluateGuest cfg.vms;
    assertions = lib.mapAttrsToList (name: vm: {
      assertion = vm.config == null || (vm.flake == null && vm.updateFlake == null);
      message = "microvm.vms.${name}: a VM with `config` cannot also have `flake` or `updateFlake`.";
    }) cfg.vms
    ++ [
      {
        assertion =
          hostCfg.evaluatorPlugin.enable -> lib.versionAtLeast (config.nix.package.version or "0") "2.24";
        message = "microvm.host.evaluatorPlugin needs a Nix >= 2.24 with its C API (nix.package is ${config.nix.package.version or "of unknown version"}).";
      }
    ];

    microvm.autostart = lib.mapAttrsToList (name: _: name) (
      lib.filterAttrs (_: vm: vm.autostart) cfg.vms
    );
    nix.settings.plugin-files = lib.mkIf hostCfg.evaluatorPlugin.enable [
      "${hostCfg.evaluatorPlugin.package}/lib/libmicrovm_nix_plugin.so"
    ];
    microvm.host.spec = spec;
    microvm.host.package = package;

    boot.kernelModules = [
      "tap"
      "vhost_net"
    ];

    users.users.${user} = {
      isSystemUser = true;
      inherit group;
    };
    security.pam.loginLimits = [
      {
        domain = user;
        item = "memlock";
        type = "-";
        value = "infinity";
      }
    ];

    systemd.packages = [ package ];
    systemd.targets.microvms.wantedBy = [ "multi-user.target" ];
    systemd.services.microvm-reconcile.wantedBy = [ "multi-user.target" ];

    systemd.tmpfiles.rules = [
      "d ${stateDir} 0775 ${user} ${group} - -"
    ]
    ++ map (dir: "d ${dir} :0775 :${user} :${group} - -") shareDirs;

    environment.systemPackages = [ command ];
  };
}
