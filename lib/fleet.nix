# `lib.fleet`: many hosts and the VMs placed on them, declared once as Nix data, turned into
# what existing tools roll out — nixosConfigurations (nixos-rebuild --target-host), a colmena
# hive and deploy-rs nodes — plus a JSON description for `microvm fleet` and, opt-in, Nomad
# jobs. It needs only nixpkgs' lib; building the hosts' systems needs `nixosSystem`.
{ lib }:

{
  hosts,
  vms,
  # nixpkgs.lib.nixosSystem (or a stand-in with its interface); only nixosConfigurations and
  # what derives from them need it.
  nixosSystem ? null,
  # The host module to add to every host (the flake passes its nixosModules.host).
  hostModule ? ../nixos-modules/host,
  # deploy-rs' `lib.<system>.activate.nixos`, as `system: nixosConfiguration: path`.
  deployActivate ? null,
  # colmena's `lib.makeHive`, for `colmenaHive` (colmena >= 0.5); `colmena` needs none.
  makeHive ? null,
  # Extra arguments of colmena's `meta` (nixpkgs, specialArgs, …).
  colmenaMeta ? { },
}:

let
  hostNames = builtins.attrNames hosts;

  # Errors at the placement step, before any host is evaluated: a VM placed on a host that does
  # not exist, with the nearest declared name.
  suggest =
    name:
    let
      distance = a: b: lib.strings.levenshtein a b;
      ranked = builtins.sort (a: b: distance name a < distance name b) hostNames;
    in
    if ranked != [ ] && distance name (builtins.head ranked) <= 3 then
      "; did you mean `${builtins.head ranked}`?"
    else
      "; declared hosts: ${lib.concatStringsSep ", " hostNames}";
  checkedVms = lib.mapAttrs (
    name: vm:
    if !(vm ? host) then
      throw "lib.fleet: vms.${name} has no `host`"
    else if !(hosts ? ${vm.host}) then
      throw "lib.fleet: vms.${name} is placed on host `${vm.host}`, which the fleet does not declare${suggest vm.host}"
    else
      vm
  ) vms;

  hostDefaults = {
    modules = [ ];
    reserve = 0;
    vcpuRatio = 1;
    memMiB = null;
    vcpus = null;
  };
  hostOf =
    name:
    if !(hosts.${name} ? system) then
      throw "lib.fleet: hosts.${name} has no `system` (such as \"x86_64-linux\")"
    else
      hostDefaults // { targetHost = name; } // hosts.${name};
  vmsOn = host: lib.filterAttrs (_: vm: vm.host == host) checkedVms;
  vmNamesOn = host: builtins.attrNames (vmsOn host);

  # The host's own modules and ours: the capacity it declared and its VMs.
  hostModules =
    name:
    let
      host = hostOf name;
    in
    host.modules
    ++ [
      hostModule
      {
        networking.hostName = lib.mkDefault name;
        microvm.host.capacity = {
          inherit (host) memMiB vcpus vcpuRatio;
          reserveMiB = host.reserve;
        };
        microvm.vms = lib.mapAttrs (
          _: vm:
          {
            autostart = vm.autostart or true;
            overrides = vm.overrides or { };
          }
          // lib.optionalAttrs (vm ? config) { inherit (vm) config; }
          // lib.optionalAttrs (vm ? flake) { inherit (vm) flake; }
          // lib.optionalAttrs (vm ? evaluatedConfig) { inherit (vm) evaluatedConfig; }
        ) (vmsOn name);
      }
    ];

  requireNixosSystem =
    if nixosSystem == null then
      throw "lib.fleet: nixosConfigurations need `nixosSystem` (pass nixpkgs.lib.nixosSystem)"
    else
      nixosSystem;

  nixosConfigurations = lib.genAttrs hostNames (
    name:
    requireNixosSystem {
      inherit ((hostOf name)) system;
      modules = hostModules name;
    }
  );

  # colmena's tags: `colmena apply --on @vm-web` reaches the host of `web`.
  tagsOf = name: map (vm: "vm-${vm}") (vmNamesOn name);
  colmena = {
    meta = colmenaMeta;
  }
  // lib.genAttrs hostNames (name: {
    deployment = {
      inherit ((hostOf name)) targetHost;
      tags = tagsOf name;
    };
    imports = hostModules name;
  });

  deploy.nodes = lib.genAttrs hostNames (
    name:
    let
      host = hostOf name;
      # deploy-rs takes the ssh user apart from the host name.
      target = lib.splitString "@" host.targetHost;
    in
    {
      hostname = lib.last target;
      profiles.system = {
        user = "root";
        path =
          if deployActivate == null then
            throw "lib.fleet: deploy needs `deployActivate` (pass deploy-rs.lib.<system>.activate.nixos as `system: deploy-rs.lib.\${system}.activate.nixos`)"
          else
            deployActivate host.system nixosConfigurations.${name};
      };
    }
    // lib.optionalAttrs (builtins.length target > 1) { sshUser = builtins.head target; }
  );

  # What `microvm fleet` reads: the hosts, how to reach them, what they have, and the VMs
  # placed on them with what each takes (overrides applied).
  description = {
    version = 1;
    hosts = lib.genAttrs hostNames (
      name:
      let
        host = hostOf name;
      in
      {
        inherit (host)
          system
          targetHost
          memMiB
          vcpus
          vcpuRatio
          ;
        reserveMiB = host.reserve;
        inherit (nixosConfigurations.${name}.config.microvm) stateDir;
      }
    );
    vms = lib.mapAttrs (
      name: vm:
      let
        placed = nixosConfigurations.${vm.host}.config.microvm.host.placement.${name};
      in
      {
        inherit (vm) host;
        inherit (placed)
          mem
          hotplugMem
          vcpu
          hypervisor
          interfaceIds
          macs
          vsockCids
          forwardedHostPorts
          ;
        stateDir = "${nixosConfigurations.${vm.host}.config.microvm.stateDir}/${name}";
      }
    ) checkedVms;
  };

  # Nomad (opt-in): one job per VM running the VM's unchanged runner under raw_exec on its host,
  # with the tap/macvtap setup as a prestart task and its state directory as a host volume.
  nomadJobs = lib.mapAttrs (
    name: vm:
    let
      config = nixosConfigurations.${vm.host}.config;
      runner = config.microvm.host.spec.vms.${name}.runner;
      stateDir = "${config.microvm.stateDir}/${name}";
      guest = config.microvm.host.guests.${name};
      hasTaps = builtins.any (i: i.type == "tap") guest.microvm.interfaces;
      hasMacvtaps = builtins.any (i: i.type == "macvtap") guest.microvm.interfaces;
      setupCommands = lib.optional hasTaps "${runner}/bin/tap-up" ++ lib.optional hasMacvtaps "${runner}/bin/macvtap-up";
      placed = config.microvm.host.placement.${name};
    in
    {
      Job = {
        ID = "microvm-${name}";
        Name = "microvm-${name}";
        Type = "service";
        Datacenters = [ "*" ];
        Constraints = [
          {
            LTarget = "\${node.unique.name}";
            Operand = "=";
            RTarget = vm.host;
          }
        ];
        TaskGroups = [
          {
            Name = name;
            Count = 1;
            # raw_exec mounts nothing (no filesystem isolation): the runner uses the state
            # directory at its host path, and claiming it as a host volume keeps the job on a
            # node that declares it.
            Volumes.state = {
              Name = "state";
              Type = "host";
              Source = "microvm-${name}";
              ReadOnly = false;
            };
            Tasks =
              lib.optional (setupCommands != [ ]) {
                Name = "network-setup";
                Driver = "raw_exec";
                Lifecycle = {
                  Hook = "prestart";
                  Sidecar = false;
                };
                Config = {
                  command = "/bin/sh";
                  args = [
                    "-c"
                    (lib.concatStringsSep " && " (map lib.escapeShellArg setupCommands))
                  ];
                };
              }
              ++ [
                {
                  Name = "vm";
                  Driver = "raw_exec";
                  # As microvm@.service runs it (raw_exec refuses `User` on a hardened client).
                  User = config.microvm.host.spec.user;
                  # The runner resolves relative volume paths in the state directory, as
                  # microvm@.service's WorkingDirectory does.
                  Config = {
                    command = "/bin/sh";
                    args = [
                      "-c"
                      "cd ${lib.escapeShellArg stateDir} && exec ${lib.escapeShellArg "${runner}/bin/microvm-run"}"
                    ];
                  };
                  Env.MICROVM_STATE_DIR = stateDir;
                  Resources = {
                    CPU = placed.vcpu * 1000;
                    MemoryMB = placed.mem + placed.hotplugMem;
                  };
                  KillSignal = "SIGTERM";
                }
              ];
          }
        ];
      };
    }
  ) checkedVms;
in
{
  inherit
    nixosConfigurations
    colmena
    deploy
    description
    nomadJobs
    ;
  # For colmena >= 0.5, which reads `colmenaHive` (made by its own lib.makeHive).
  colmenaHive =
    if makeHive == null then
      throw "lib.fleet: colmenaHive needs `makeHive` (pass colmena.lib.makeHive)"
    else
      makeHive colmena;
  # The hosts' modules, for tools this library does not know.
  modulesOf = lib.genAttrs hostNames hostModules;
}
