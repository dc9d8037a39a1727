# Assertions and warnings: what the module system can tell about a VM before anything builds.
# The capability checks come from lib/capabilities.json (through lib/capabilities.nix), so
# they refuse exactly what the generator refuses, with the same hints. Where Nix has loaded our
# evaluator plugin (lib/nix-plugin.nix), the generator itself checks the spec instead
# (builtins.microvmValidate): every problem at once, with its code and hint, as an evaluation
# error (a primop's error is not a failed assertion).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.microvm;
  inherit (config.networking) hostName;
  microvmLib = import ../../lib { inherit lib; };

  # One assertion per value that several entries share.
  unique =
    what: key: entries:
    map (group: {
      assertion = builtins.length group == 1;
      message = ''MicroVM ${hostName}: ${what} "${toString (key (builtins.head group))}" is used ${toString (builtins.length group)} times.'';
    }) (builtins.attrValues (builtins.groupBy (entry: toString (key entry)) entries));

  virtiofsShares = builtins.filter (share: share.proto == "virtiofs") cfg.shares;

  # The spec as the runner gets it, but for what depends on the system itself, whose
  # evaluation checks these assertions: the store disk (made from the toplevel) and the kernel
  # command line (it names the toplevel's init). The runner's own spec, with both, is checked
  # again where microvmRender makes the runner.
  specForChecks = microvmLib.runnerSpec {
    inherit pkgs;
    microvmConfig = cfg // {
      inherit hostName;
      storeDisk = "/nix/store/00000000000000000000000000000000-microvm-store-disk";
      kernelParams = [ ];
    };
    checkCapabilities = false;
  };
  capabilityAssertions =
    if builtins ? microvmValidate then
      [
        {
          # microvmValidate returns the spec or throws the generator's report.
          assertion = builtins.isAttrs (builtins.microvmValidate specForChecks);
          message = "MicroVM ${hostName}: the generator refused the runner spec.";
        }
      ]
    else
      map (violation: {
        assertion = false;
        message = "MicroVM ${hostName}: ${violation.message}";
      }) (microvmLib.violations cfg.hypervisor cfg);
  translatesIds = args: lib.any (arg: lib.hasInfix "--translate-uid" arg || lib.hasInfix "--translate-gid" arg) args;
in
lib.mkIf cfg.guest.enable {
  assertions =
    capabilityAssertions
    ++ unique "microvm.volumes: the image" (volume: volume.image) cfg.volumes
    ++ unique "microvm.interfaces: the id" (interface: interface.id) cfg.interfaces
    ++ unique "microvm.shares: the tag" (share: share.tag) cfg.shares
    ++ unique "microvm.shares: the virtiofs socket" (share: share.socket) virtiofsShares
    ++ map (interface: {
      assertion = (interface.type == "bridge") == (interface.bridge != null);
      message =
        if interface.type == "bridge" then
          ''MicroVM ${hostName}: microvm.interfaces: the bridge interface "${interface.id}" needs `bridge`, the host bridge to attach to.''
        else
          ''MicroVM ${hostName}: microvm.interfaces: "${interface.id}" has type "${interface.type}", so `bridge` must stay null.'';
    }) cfg.interfaces
    ++ map (interface: {
      assertion = builtins.stringLength interface.id <= 15;
      message = ''MicroVM ${hostName}: microvm.interfaces: the id "${interface.id}" is longer than the 15 bytes of a Linux interface name.'';
    }) cfg.interfaces
    ++ map (share: {
      assertion = share.socket != null;
      message = ''MicroVM ${hostName}: microvm.shares: the virtiofs share "${share.tag}" needs a `socket`.'';
    }) virtiofsShares
    ++ map (share: {
      assertion = !(share.posixAcl && translatesIds (cfg.virtiofsd.extraArgs ++ share.extraArgs));
      message = ''MicroVM ${hostName}: microvm.shares: the virtiofs share "${share.tag}" has posixAcl = true and remaps ids (--translate-uid/--translate-gid), which virtiofsd does not combine; set posixAcl = false.'';
    }) virtiofsShares
    ++ [
      {
        assertion = cfg.forwardPorts != [ ] -> lib.any (interface: interface.type == "user") cfg.interfaces;
        message = ''MicroVM ${hostName}: microvm.forwardPorts needs an interface with type = "user".'';
      }
      {
        assertion = !lib.any (lib.hasInfix "oem_strings") cfg.cloud-hypervisor.platformOEMStrings;
        message = "MicroVM ${hostName}: microvm.cloud-hypervisor.platformOEMStrings: give the strings only, without `oem_strings`.";
      }
      {
        assertion = builtins.isInt cfg.virtiofsd.threadPoolSize
          || cfg.virtiofsd.threadPoolSize == "`nproc`"
          || builtins.match "[0-9]+" cfg.virtiofsd.threadPoolSize != null;
        message = ''MicroVM ${hostName}: microvm.virtiofsd.threadPoolSize must be a number or "`nproc`".'';
      }
      {
        assertion = cfg.writableStoreOverlay != null -> !(config.nix.optimise.automatic || config.nix.settings.auto-optimise-store);
        message = "MicroVM ${hostName}: nix.optimise.automatic and nix.settings.auto-optimise-store do not work with microvm.writableStoreOverlay.";
      }
    ];

  warnings =
    lib.optional (cfg.mem < 32) "MicroVM ${hostName}: microvm.mem = ${toString cfg.mem} MiB is very little for NixOS."
    ++ lib.optional config.nix.optimise.automatic "MicroVM ${hostName}: nix.optimise.automatic holds many files open through virtiofsd and gains nothing on a store disk."
    # The runner spec has no field for it yet, so the runner gets no microvm-register script.
    ++ lib.optional cfg.registerWithMachined "MicroVM ${hostName}: microvm.registerWithMachined is not supported yet; the VM is not registered with systemd-machined.";
}
