# Capacity checks (issue 16): `microvm.vms.<name>.overrides` (declared with the other VM
# options in ./options.nix, applied in ./default.nix) sets a VM's size, hypervisor and devices
# over what its guest configuration says, so the same guest runs on hosts of different sizes; `microvm.host.capacity` declares what the host has, and the
# assertions here check at evaluation time that the VMs placed on it fit and do not collide.
# `lib.fleet` fills both in; a single host can set them by hand.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.microvm;
  capacity = cfg.host.capacity;

  # The guests' effective settings, overrides applied (default.nix evaluates them).
  guests = cfg.host.guests;

  sumOf = f: lib.foldl' (total: name: total + f guests.${name}) 0 (builtins.attrNames guests);
  memOf = guest: guest.microvm.mem + guest.microvm.hotplugMem;
  memUsed = sumOf memOf;
  vcpuUsed = sumOf (guest: guest.microvm.vcpu);
  # Messages are strings even when nothing is declared (the stand-in toplevel reads them all).
  memFree = if capacity.memMiB == null then 0 else capacity.memMiB - capacity.reserveMiB;
  vcpuLimit = if capacity.vcpus == null then 0 else capacity.vcpus * capacity.vcpuRatio;

  listVms =
    f:
    lib.concatStringsSep ", " (lib.mapAttrsToList (name: guest: "${name} ${toString (f guest)}") guests);

  # Values two VMs must not share on one host: { value = [ vm … ]; } for each value used twice.
  duplicates =
    valuesOf:
    lib.filterAttrs (_: vms: builtins.length vms > 1) (
      lib.foldl' (
        seen: name:
        lib.foldl' (
          acc: value: acc // { ${value} = (acc.${value} or [ ]) ++ [ name ]; }
        ) seen (lib.unique (valuesOf guests.${name}))
      ) { } (builtins.attrNames guests)
    );
  uniqueCheck = what: valuesOf: {
    assertion = duplicates valuesOf == { };
    message =
      "microvm host ${config.networking.hostName}: ${what} used by more than one VM: "
      + lib.concatStringsSep "; " (
        lib.mapAttrsToList (value: vms: "${value} by ${lib.concatStringsSep " and " vms}") (
          duplicates valuesOf
        )
      );
  };

  # What two VMs on one host must not share (checked below, and by `microvm fleet plan-move`).
  interfaceIds = g: map (i: i.id) (builtins.filter (i: i.type != "user") g.microvm.interfaces);
  macs = g: map (i: lib.toLower i.mac) g.microvm.interfaces;
  vsockCids = g: lib.optional (g.microvm.vsock.cid != null) (toString g.microvm.vsock.cid);
  forwardedHostPorts =
    g:
    map (p: "${p.proto}/${toString p.host.port}") (
      builtins.filter (p: p.from == "host") g.microvm.forwardPorts
    );

  hostSystem = pkgs.stdenv.hostPlatform.system;
  runnerSystem = guest: guest.microvm.vmHostPackages.stdenv.hostPlatform.system;
  wrongSystem = lib.filterAttrs (_: guest: runnerSystem guest != hostSystem) guests;
in
{
  options.microvm = {
    host.capacity = {
      memMiB = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "RAM of the host in MiB; with it, the VMs' memory (and hotplug memory) must fit `memMiB - reserveMiB`.";
      };
      reserveMiB = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "RAM in MiB kept for the host itself.";
      };
      vcpus = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "CPUs of the host; with it, the VMs' vCPUs must stay within `vcpus * vcpuRatio`.";
      };
      vcpuRatio = mkOption {
        type = types.number;
        default = 1;
        description = "How many vCPUs the host may give out per CPU (oversubscription ratio).";
      };
    };

    host.guests = mkOption {
      type = types.attrsOf types.raw;
      readOnly = true;
      internal = true;
      description = "The evaluated configuration of each VM of `microvm.vms`, overrides applied.";
    };

    host.placement = mkOption {
      type = types.attrsOf types.raw;
      readOnly = true;
      description = "What each VM of `microvm.vms` takes on this host (`mem`, `hotplugMem`, `vcpu`, `hypervisor`, `system`) and what no other VM on it may use (`interfaceIds`, `macs`, `vsockCids`, `forwardedHostPorts`), overrides applied.";
    };
  };

  config = lib.mkIf cfg.host.enable {
    microvm.host.placement = lib.mapAttrs (_: guest: {
      inherit (guest.microvm)
        mem
        hotplugMem
        vcpu
        hypervisor
        ;
      system = runnerSystem guest;
      interfaceIds = interfaceIds guest;
      macs = macs guest;
      vsockCids = vsockCids guest;
      forwardedHostPorts = forwardedHostPorts guest;
    }) guests;

    assertions = [
      {
        assertion = capacity.memMiB == null || memUsed <= memFree;
        message =
          "microvm host ${config.networking.hostName}: the VMs need ${toString memUsed} MiB "
          + "(memory + hotplug memory: ${listVms memOf}) but the host has ${toString memFree} MiB "
          + "(${toString capacity.memMiB} MiB, ${toString capacity.reserveMiB} MiB reserved)";
      }
      {
        assertion = capacity.vcpus == null || vcpuUsed <= vcpuLimit;
        message =
          "microvm host ${config.networking.hostName}: the VMs have ${toString vcpuUsed} vCPUs "
          + "(${listVms (g: g.microvm.vcpu)}) but the host allows ${toString vcpuLimit} "
          + "(${toString capacity.vcpus} CPUs × ratio ${toString capacity.vcpuRatio})";
      }
      (uniqueCheck "tap id" interfaceIds)
      (uniqueCheck "MAC address" macs)
      (uniqueCheck "vsock CID" vsockCids)
      (uniqueCheck "forwarded host port" forwardedHostPorts)
      {
        assertion = wrongSystem == { };
        message =
          "microvm host ${config.networking.hostName} (${hostSystem}): "
          + lib.concatStringsSep "; " (
            lib.mapAttrsToList (name: guest: "VM ${name}'s runner is for ${runnerSystem guest}") wrongSystem
          );
      }
    ];
  };
}
