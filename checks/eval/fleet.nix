# Evaluation tests of `lib.fleet` (tier 4, issue 16): a fleet of 3 hosts and 6 VMs evaluated
# with nixpkgs' lib, the stand-ins, and colmena's `deployment.*` options (./colmena-stand-in.nix),
# and one broken fleet per capacity or uniqueness check. Nothing is built.
{
  lib,
  standIns,
  microvmLib,
}:

let
  # nixpkgs.lib.nixosSystem's interface, with the stand-ins for NixOS; guests are evaluated for
  # the host's system.
  nixosSystem =
    { system, modules }:
    lib.evalModules {
      modules = [
        standIns.nixosModule
        {
          _module.args.pkgs = standIns.pkgsFor system;
          microvm.host.evalGuest =
            { name, vm }:
            standIns.evalGuest {
              inherit system;
              modules = [ { networking.hostName = name; } ] ++ [ vm.config ] ++ vm.extraModules;
            };
        }
      ]
      ++ modules;
    };
  # deploy-rs' activate.nixos: the profile is the system's toplevel.
  deployActivate = system: nixos: "${nixos.config.system.build.toplevel}";

  # Two guest modules as one.
  both = a: b: {
    imports = [
      a
      b
    ];
  };
  tap = id: mac: {
    microvm.interfaces = [
      {
        type = "tap";
        inherit id mac;
      }
    ];
  };

  userNet = {
    type = "user";
    id = "usernet";
    mac = "02:00:00:00:00:0c";
  };

  hosts = {
    big = {
      system = "x86_64-linux";
      memMiB = 16384;
      reserve = 2048;
      vcpus = 8;
      vcpuRatio = 2;
      targetHost = "root@big.example.org";
      modules = [ { boot.kernelModules = [ "kvm-amd" ]; } ];
    };
    small = {
      system = "x86_64-linux";
      memMiB = 4096;
      reserve = 1024;
      vcpus = 4;
      targetHost = "small.example.org";
    };
    arm = {
      system = "aarch64-linux";
      # Its VMs live elsewhere: a move there copies into /srv/vms.
      modules = [ { microvm.stateDir = "/srv/vms"; } ];
      memMiB = 8192;
      vcpus = 4;
      targetHost = "arm.example.org";
    };
  };

  # web is the same guest on both x86 hosts' sizes: big gives it more through overrides.
  webGuest = {
    microvm.mem = 512;
    microvm.vcpu = 1;
  };
  vms = {
    web = {
      host = "big";
      config = both webGuest (tap "vm-web" "02:00:00:00:00:01");
      overrides = {
        mem = 2048;
        vcpu = 4;
        hypervisor = "cloud-hypervisor";
      };
    };
    db = {
      host = "big";
      config = both {
        microvm.mem = 4096;
        microvm.hotplugMem = 2048;
        microvm.vsock.cid = 3;
        microvm.volumes = [
          {
            image = "db.img";
            mountPoint = "/var/lib/postgresql";
            size = 4096;
          }
        ];
      } (tap "vm-db" "02:00:00:00:00:02");
    };
    # Already evaluated (as a flake's nixosConfigurations are): overrides extend it.
    cache = {
      host = "big";
      evaluatedConfig = standIns.evalGuest {
        modules = [
          {
            networking.hostName = "cache";
            microvm.vsock.cid = 4;
          }
        ];
      };
      overrides.mem = 768;
    };
    mail = {
      host = "small";
      config = webGuest;
      overrides.interfaces = [
        {
          type = "tap";
          id = "vm-mail";
          mac = "02:00:00:00:00:05";
        }
      ];
    };
    ci = {
      host = "small";
      autostart = false;
      config.microvm.interfaces = [ userNet ];
      config.microvm.forwardPorts = [
        {
          host.port = 2222;
          guest.port = 22;
        }
      ];
    };
    edge = {
      host = "arm";
      config.microvm.mem = 1024;
    };
  };

  fleetOf =
    args:
    microvmLib.fleet (
      {
        inherit nixosSystem deployActivate;
        makeHive = hive: { __colmenaHive = hive; };
      }
      // args
    );
  fleet = fleetOf { inherit hosts vms; };

  # A colmena node evaluated as colmena does: its module with colmena's deployment options.
  colmenaNode =
    hive: hostName:
    lib.evalModules {
      specialArgs.name = hostName;
      modules = [
        ./colmena-stand-in.nix
        standIns.nixosModule
        {
          _module.args.pkgs = standIns.pkgsFor hosts.${hostName}.system;
          microvm.host.evalGuest =
            { name, vm }:
            standIns.evalGuest {
              inherit (hosts.${hostName}) system;
              modules = [ { networking.hostName = name; } ] ++ [ vm.config ] ++ vm.extraModules;
            };
        }
        (removeAttrs hive.${hostName} [ "imports" ])
      ]
      ++ hive.${hostName}.imports;
    };

  failedAssertions =
    config: map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  failedOn =
    fleetArgs: host: failedAssertions (fleetOf fleetArgs).nixosConfigurations.${host}.config;

  # One broken fleet per check.
  small1 = {
    host = "small";
    config = { };
  };
in
{
  ok = {
    description = fleet.description;
    placement = lib.mapAttrs (
      _: nixos: builtins.attrNames nixos.config.microvm.vms
    ) fleet.nixosConfigurations;
    failed = lib.mapAttrs (_: nixos: failedAssertions nixos.config) fleet.nixosConfigurations;
    # The guests' effective settings, as the runners get them.
    web = {
      inherit (fleet.nixosConfigurations.big.config.microvm.host.guests.web.microvm)
        mem
        vcpu
        hypervisor
        ;
    };
    cache = {
      inherit (fleet.nixosConfigurations.big.config.microvm.host.guests.cache.microvm) mem;
      inherit (fleet.nixosConfigurations.big.config.microvm.host.guests.cache.microvm.vsock) cid;
    };
    mail.interfaces = map (i: {
      inherit (i) type id mac;
    }) fleet.nixosConfigurations.small.config.microvm.host.guests.mail.microvm.interfaces;
    autostart = lib.mapAttrs (_: nixos: nixos.config.microvm.autostart) fleet.nixosConfigurations;
    hostModule = fleet.nixosConfigurations.big.config.boot.kernelModules;
    hostName = fleet.nixosConfigurations.arm.config.networking.hostName;
    runnerSystems = lib.mapAttrs (
      _: nixos: lib.mapAttrs (_: p: p.system) nixos.config.microvm.host.placement
    ) fleet.nixosConfigurations;
    toplevel = "${fleet.nixosConfigurations.small.config.system.build.toplevel}";
    colmena = lib.genAttrs (builtins.attrNames hosts) (
      name:
      let
        node = (colmenaNode fleet.colmena name).config;
      in
      {
        inherit (node.deployment) targetHost tags targetUser;
        vms = builtins.attrNames node.microvm.vms;
      }
    );
    colmenaHiveIsMadeFromColmena = fleet.colmenaHive.__colmenaHive == fleet.colmena;
    deploy = fleet.deploy;
    nomadWeb = fleet.nomadJobs.web;
    nomadCache = fleet.nomadJobs.cache;
  };

  # colmena's options are typed as colmena types them, not a catch-all: a misspelt one and a
  # wrongly typed one fail as they would under colmena.
  colmenaMisspelt =
    (colmenaNode (
      fleet.colmena
      // {
        small = fleet.colmena.small // {
          deployment.targetHots = "small.example.org";
        };
      }
    ) "small").config.deployment.targetHost;
  colmenaMistyped =
    (colmenaNode (
      fleet.colmena
      // {
        small = fleet.colmena.small // {
          deployment.tags = "vm-mail";
        };
      }
    ) "small").config.deployment.tags;

  # One fleet per check, each breaking just it.
  err = {
    memory = failedOn {
      inherit hosts;
      vms = vms // {
        mail = vms.mail // {
          overrides.mem = 2600;
        };
      };
    } "small";
    vcpus = failedOn {
      inherit hosts;
      vms = vms // {
        ci = vms.ci // {
          overrides.vcpu = 4;
        };
      };
    } "small";
    tapId = failedOn {
      inherit hosts;
      vms = vms // {
        cache = {
          host = "big";
          config = tap "vm-web" "02:00:00:00:00:09";
        };
      };
    } "big";
    mac = failedOn {
      inherit hosts;
      vms = vms // {
        ci = vms.ci // {
          overrides.interfaces = [
            {
              type = "tap";
              id = "vm-ci";
              mac = "02:00:00:00:00:05";
            }
          ];
        };
      };
    } "small";
    vsockCid = failedOn {
      inherit hosts;
      vms = vms // {
        web = vms.web // {
          config = both vms.web.config { microvm.vsock.cid = 3; };
        };
      };
    } "big";
    forwardedPort = failedOn {
      inherit hosts;
      vms = vms // {
        mail = vms.mail // {
          overrides.interfaces = [ (userNet // { mac = "02:00:00:00:00:0d"; }) ];
          config = both webGuest {
            microvm.forwardPorts = [
              {
                host.port = 2222;
                guest.port = 2022;
              }
            ];
          };
        };
      };
    } "small";
    # edge comes built for x86_64 (an evaluated guest), placed on the arm host.
    system = failedOn {
      inherit hosts;
      vms = vms // {
        edge = {
          host = "arm";
          evaluatedConfig = standIns.evalGuest {
            system = "x86_64-linux";
            modules = [ { networking.hostName = "edge"; } ];
          };
        };
      };
    } "arm";
    unknownHost =
      (fleetOf {
        inherit hosts;
        vms = vms // {
          extra = small1 // {
            host = "smal";
          };
        };
      }).description;
  };
}
