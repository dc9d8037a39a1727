# The evaluation tests' expressions (tier 4), run by codegen/tests/nix_eval.rs with
#   nix-instantiate --eval --strict --json checks/eval --argstr nixpkgsLib "$NIXPKGS_LIB" -A <name>
# Everything evaluates the guest module through lib.evalModules with the stand-ins of
# ./stand-ins.nix; nothing needs nixpkgs and nothing is built.
{
  nixpkgsLib,
  # Where the stand-in packages live: `${pkgs.socat}/bin/socat` is "${prefix}/bin/socat".
  prefix ? "/usr",
  # The end-to-end VM (attribute e2e): a kernel file, an initrd, extra kernel parameters (a
  # JSON list) and a store disk image.
  e2eKernel ? "/stand-in/kernel/bzImage",
  e2eInitrd ? "/stand-in/initrd",
  e2eParams ? "[]",
  e2eStoreDisk ? "/stand-in/store.erofs",
  # The token file of the CI runner pools (attribute host.ciRunners): tests write a marker there.
  ciTokenFile ? "/run/secrets/ci-token",
}:

let
  lib = import nixpkgsLib;
  microvmLib = import ../../lib { inherit lib; };
  standIns = import ./stand-ins.nix { inherit lib prefix; };
  examples = import ../../examples;

  guest = modules: (standIns.evalGuest { inherit modules; }).config;

  # A guest with nothing but a host name, and one with one of each list entry.
  bare = guest [ { networking.hostName = "bare"; } ];
  withEntries = guest [
    {
      networking.hostName = "entries";
      microvm.volumes = [
        {
          image = "var.img";
          mountPoint = "/var";
          size = 64;
        }
      ];
      microvm.shares = [
        {
          tag = "data";
          source = "/srv/data";
          mountPoint = "/data";
        }
        {
          tag = "fs";
          source = "/srv/fs";
          mountPoint = "/fs";
          proto = "virtiofs";
        }
      ];
      microvm.interfaces = [
        {
          type = "tap";
          id = "vm-tap";
          mac = "02:00:00:00:00:01";
        }
      ];
      microvm.forwardPorts = [
        {
          host.port = 2222;
          guest.port = 22;
        }
      ];
    }
  ];

  firecracker9p = guest [
    {
      networking.hostName = "fc";
      microvm.hypervisor = "firecracker";
      microvm.shares = [
        {
          tag = "data";
          source = "/srv/data";
          mountPoint = "/data";
          proto = "9p";
        }
      ];
    }
  ];

  # The guest template (mvm's hello example through mkGuest), its inputs replaced as above.
  guestTemplateOutputs =
    let
      flake = import ../../guest-template/flake.nix;
      nixosSystem =
        { modules, system, ... }:
        standIns.evalGuest {
          inherit modules system;
        };
      mkGuest = import ../../lib/mk-guest.nix { inherit lib; } {
        inherit nixosSystem;
        microvmModule = ../../nixos-modules/microvm;
      };
    in
    flake.outputs {
      nixpkgs = {
        inherit lib;
        legacyPackages.x86_64-linux = standIns.pkgsFor "x86_64-linux";
      };
      microvm.lib.x86_64-linux.mkGuest = args: mkGuest ({ system = "x86_64-linux"; } // args);
    };

  # The flake template, its inputs replaced: nixpkgs.lib.nixosSystem evaluates with the
  # stand-ins, the microvm input is this repository.
  templateOutputs =
    let
      flake = import ../../flake-template/flake.nix;
      nixpkgs = {
        lib = lib // {
          nixosSystem =
            { modules, system, ... }:
            standIns.evalGuest {
              inherit modules system;
            };
        };
      };
      microvm.nixosModules.microvm = ../../nixos-modules/microvm;
      outputs = flake.outputs {
        self = outputs;
        inherit nixpkgs microvm;
      };
    in
    outputs;

  # The flake itself, nixpkgs replaced by the stand-ins: its outputs are wired up.
  flakeOutputs =
    let
      flake = import ../../flake.nix;
      nixpkgs = {
        lib = lib // {
          nixosSystem = { modules, ... }: standIns.evalGuest { inherit modules; };
        };
        legacyPackages = lib.genAttrs [
          "x86_64-linux"
          "aarch64-linux"
          "aarch64-darwin"
        ] standIns.pkgsFor;
      };
      outputs = flake.outputs {
        self = outputs;
        inherit nixpkgs;
      };
    in
    outputs;

  e2e = guest [
    (
      { lib, ... }:
      {
        networking.hostName = "e2e";
        boot.kernelParams = builtins.fromJSON e2eParams;
        microvm = {
          hypervisor = "qemu";
          # This machine's KVM cannot run stock kernels: qemu emulates the CPU.
          cpu = "max";
          mem = 256;
          kernel = standIns.kernel {
            dir = dirOf e2eKernel;
            file = baseNameOf e2eKernel;
          };
          initrdPath = e2eInitrd;
          storeDisk = lib.mkForce e2eStoreDisk;
        };
      }
    )
  ];

  # A guest that uses every feature of the capability table at least once.
  everyFeature = guest [
    {
      networking.hostName = "every";
      microvm = {
        # Not from the system's toplevel, which refuses to evaluate: this VM fails assertions.
        kernelParams = lib.mkForce [ "console=ttyS0" ];
        shares = [
          {
            tag = "ro9p";
            source = "/srv/a";
            mountPoint = "/a";
            proto = "9p";
            readOnly = true;
          }
          {
            tag = "fs";
            source = "/srv/b";
            mountPoint = "/b";
            proto = "virtiofs";
            readOnly = true;
          }
        ];
        interfaces = [
          {
            type = "user";
            id = "user0";
            mac = "02:00:00:00:01:01";
          }
          {
            type = "tap";
            id = "tap0";
            mac = "02:00:00:00:01:02";
            tap.vhost = true;
          }
          {
            type = "macvtap";
            id = "mvtap0";
            mac = "02:00:00:00:01:03";
            macvtap.link = "eth0";
            macvtap.mode = "bridge";
          }
          {
            type = "bridge";
            id = "br0tap";
            bridge = "br0";
            mac = "02:00:00:00:01:04";
          }
        ];
        forwardPorts = [
          {
            host.port = 2222;
            guest.port = 22;
          }
        ];
        balloon = true;
        initialBalloonMem = 64;
        hotplugMem = 1024;
        hugepageMem = true;
        vsock.cid = 42;
        devices = [
          {
            bus = "pci";
            path = "0000:01:00.0";
          }
          {
            bus = "usb";
            path = "vendorid=0x1234,productid=0x5678";
          }
        ];
        credentialFiles.KEY = "/run/keys/key";
        graphics.enable = true;
        user = "microvm";
        cpu = "max";
        volumes = [
          {
            image = "a.img";
            mountPoint = "/va";
            size = 16;
            serial = "vola";
            direct = true;
            readOnly = true;
            imageType = "qcow2";
          }
        ];
      };
    }
  ];

  # Guests that reach the modules' other NixOS settings: a writable store overlay on a volume,
  # the host's store shared into a qemu guest (systemd initrd, so a mount unit), and vfkit with
  # Rosetta. Graphics (boot.kernelModules) and the store disk (boot.initrd.availableKernelModules)
  # add to lists that system.nix defines too.
  overlayGuest = guest [
    {
      networking.hostName = "overlay";
      microvm.writableStoreOverlay = "/nix/.rw-store";
      microvm.volumes = [
        {
          image = "store.img";
          mountPoint = "/nix/.rw-store";
          size = 64;
        }
      ];
    }
  ];
  hostStoreGuest = guest [
    {
      networking.hostName = "hoststore";
      microvm.shares = [
        {
          tag = "ro-store";
          source = "/nix/store";
          mountPoint = "/nix/.ro-store";
        }
      ];
      microvm.interfaces = [
        {
          type = "user";
          id = "usernet";
          mac = "02:00:00:00:02:01";
        }
      ];
      services.openssh.enable = true;
    }
  ];
  rosettaGuest = guest [
    {
      networking.hostName = "rosetta";
      microvm.hypervisor = "vfkit";
      microvm.vfkit.rosetta.enable = true;
    }
  ];
  graphicsGuest = guest [
    {
      networking.hostName = "graphics";
      microvm.graphics.enable = true;
    }
  ];

  # Graphics on cloud-hypervisor, written as microvm.nix users write it (as its graphics
  # example does): a VM showing Wayland programs on the host. `extra` adds one module.
  cloudHypervisorGraphicsGuest =
    extra:
    guest [
      {
        networking.hostName = "ch-graphics";
        microvm = {
          hypervisor = "cloud-hypervisor";
          graphics.enable = true;
          vcpu = 2;
          mem = 2048;
          interfaces = [
            {
              type = "tap";
              id = "vm-graphics";
              mac = "02:00:00:00:00:02";
            }
          ];
          shares = [
            {
              proto = "virtiofs";
              tag = "ro-store";
              source = "/nix/store";
              mountPoint = "/nix/.ro-store";
            }
          ];
        };
      }
      extra
    ];
  # A package of its own, to see which option a program path comes from.
  standInPackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/stand-in/${name}";
    drvPath = "/stand-in/${name}.drv";
  };

  # microvm.nix configurations that replace runners, written as its users write them: the
  # declared runner wrapped (plainly, under `mkIf`, or forced), one hypervisor's runner forced.
  # Each guest's runner names, and the script of the runner it declares.
  runnerOverride =
    module:
    let
      vm =
        (guest [
          { networking.hostName = "ovr"; }
          module
        ]).microvm;
    in
    {
      declaredRunner = vm.declaredRunner.name;
      declaredRunnerText = vm.declaredRunner.passthru.text or null;
      runners = lib.mapAttrs (_: runner: runner.name) vm.runner;
    };
  wrapRunner =
    { config, pkgs }:
    pkgs.writeShellScriptBin "wrapped" ''
      exec ${config.microvm.runner.${config.microvm.hypervisor}}/bin/microvm-run "$@"
    '';

  # A guest with one module of ours added (below, `mistyped`): its spec, which needs the
  # system's toplevel and so every NixOS option's value, as building it would.
  specWith = module: (guest [ module ]).microvm.runnerSpec.qemu;

  pick = names: attrs: lib.getAttrs names attrs;
  # mvm's hello example (issue 10), as our guest options.
  helloModule = pkgs: {
    networking.hostName = "hello";
    microvm.vsock.cid = 3;
    microvm.services.hello = {
      preStart = "mkdir -p /tmp/www && echo '<h1>Hello</h1>' > /tmp/www/index.html";
      command = "${pkgs.python3 or pkgs.bash}/bin/python3 -m http.server 8080 --directory /tmp/www";
      env = {
        PORT = "8080";
      };
    };
    microvm.healthChecks.hello = {
      healthCmd = "${pkgs.curl}/bin/curl -sf http://localhost:8080/";
      healthIntervalSecs = 5;
    };
  };
  helloGuest = guest [ ({ pkgs, ... }: helloModule pkgs) ];
in
{
  # Graphics on cloud-hypervisor: its failed assertions, its toplevel and spec as written; and
  # the programs of its spec where the package set has microvm.nix's cloud-hypervisor-graphics
  # and graphics.crosvmPackage is set.
  cloudHypervisorGraphics =
    let
      plain = cloudHypervisorGraphicsGuest { };
      chosen = cloudHypervisorGraphicsGuest (
        { pkgs, ... }:
        {
          microvm.vmHostPackages = pkgs // {
            cloud-hypervisor-graphics = standInPackage "cloud-hypervisor-graphics";
          };
          microvm.graphics.crosvmPackage = standInPackage "crosvm-gpu";
        }
      );
    in
    {
      assertionMessages = map (a: a.message) (builtins.filter (a: !a.assertion) plain.assertions);
      toplevel = "${plain.system.build.toplevel}";
      spec = plain.microvm.runnerSpec.cloud-hypervisor;
      chosenTools = chosen.microvm.runnerSpec.cloud-hypervisor.tools;
    };

  # Each example's spec for its own hypervisor.
  exampleSpecs = lib.mapAttrs (
    hypervisor: example:
    (standIns.evalGuest {
      modules = [ example.module ];
      inherit (example) system hostSystem;
    }).config.microvm.runnerSpec.${hypervisor}
  ) examples;

  firecracker9p = {
    assertionMessages = map (a: a.message) (builtins.filter (a: !a.assertion) firecracker9p.assertions);
    # Both fail to evaluate.
    spec = firecracker9p.microvm.runnerSpec.firecracker;
    toplevel = "${firecracker9p.system.build.toplevel}";
  };

  defaults = {
    microvm =
      pick [
        "hypervisor"
        "vcpu"
        "mem"
        "interfaces"
        "volumes"
        "shares"
        "forwardPorts"
        "devices"
        "socket"
        "user"
        "cpu"
        "balloon"
        "initialBalloonMem"
        "deflateOnOOM"
        "hugepageMem"
        "hotplugMem"
        "hotpluggedMem"
        "storeOnDisk"
        "storeDiskType"
        "storeDiskErofsFlags"
        "storeDiskSquashfsFlags"
        "systemSymlink"
        "registerClosure"
        "writableStoreOverlay"
        "machineId"
        "prettyProcnames"
        "preStart"
        "extraArgsScript"
        "registerWithMachined"
        "credentialFiles"
        "binScripts"
      ] bare.microvm
      // {
        guest.enable = bare.microvm.guest.enable;
        optimize.enable = bare.microvm.optimize.enable;
        vsock.cid = bare.microvm.vsock.cid;
        graphics = pick [
          "enable"
          "backend"
          "socket"
          "vulkan"
          "hostmem"
        ] bare.microvm.graphics;
        qemu = pick [
          "machine"
          "machineOpts"
          "extraArgs"
          "serialConsole"
          "pcieRootPorts"
        ] bare.microvm.qemu;
        firecracker = pick [
          "driveIoEngine"
          "cpu"
          "extraArgs"
          "extraConfig"
        ] bare.microvm.firecracker;
        vfkit = pick [
          "logLevel"
          "extraArgs"
        ] bare.microvm.vfkit // {
          rosetta = bare.microvm.vfkit.rosetta;
        };
        virtiofsd = pick [
          "inodeFileHandles"
          "threadPoolSize"
          "group"
          "extraArgs"
        ] bare.microvm.virtiofsd;
        kernelParams = bare.microvm.kernelParams;
        declaredRunner = bare.microvm.declaredRunner.name;
        runners = lib.mapAttrs (_: runner: runner.name) bare.microvm.runner;
      };
    volume = builtins.head withEntries.microvm.volumes;
    share9p = builtins.elemAt withEntries.microvm.shares 0;
    shareVirtiofs = builtins.elemAt withEntries.microvm.shares 1;
    # macvtap.link and .mode have no defaults, as in microvm.nix.
    interface = removeAttrs (builtins.head withEntries.microvm.interfaces) [ "macvtap" ];
    forwardPort = builtins.head withEntries.microvm.forwardPorts;
    # Guest integration of the same VMs.
    fileSystems = withEntries.fileSystems;
    bareFileSystems = bare.fileSystems;
    networks = withEntries.systemd.network.networks;
    initrdKernelModules = bare.boot.initrd.kernelModules;
    firecrackerInitrdKernelModules = firecracker9p.boot.initrd.kernelModules;
    machineIdFile = bare.environment.etc."machine-id".text;
    hostId = bare.networking.hostId;
  };

  guestTemplate =
    let
      runner = guestTemplateOutputs.packages.x86_64-linux.default;
      inherit (runner.nixosConfiguration) config;
    in
    {
      runner = runner.name;
      passthruIsTheConfiguration = runner.passthru.nixosConfiguration.config.networking.hostName;
      spec = config.microvm.runnerSpec.qemu;
      systemPackages = map (p: p.name) config.environment.systemPackages;
      helloUser = config.systemd.services.hello.serviceConfig.User;
      checkTimer = config.systemd.timers.health-hello.timerConfig;
      toplevel = "${config.system.build.toplevel}";
    };

  template = {
    spec = templateOutputs.nixosConfigurations.my-microvm.config.microvm.runnerSpec.qemu;
    runner = templateOutputs.packages.x86_64-linux.my-microvm.name;
    default = templateOutputs.packages.x86_64-linux.default.name;
  };

  e2eSpec = e2e.microvm.runnerSpec.qemu;

  runnerOverrides = {
    declaredPlain = runnerOverride (
      { config, pkgs, ... }:
      {
        microvm.declaredRunner = wrapRunner { inherit config pkgs; };
      }
    );
    declaredMkIf = runnerOverride (
      { config, pkgs, ... }:
      {
        microvm.declaredRunner = lib.mkIf true (wrapRunner { inherit config pkgs; });
      }
    );
    # A false condition leaves the module's runner in place.
    declaredMkIfFalse = runnerOverride (
      { config, pkgs, ... }:
      {
        microvm.declaredRunner = lib.mkIf false (wrapRunner { inherit config pkgs; });
      }
    );
    declaredMkForce = runnerOverride (
      { config, pkgs, ... }:
      {
        microvm.declaredRunner = lib.mkForce (wrapRunner { inherit config pkgs; });
      }
    );
    # `runner.<hypervisor>` replaced: the declared runner follows it, the others stay.
    runnerMkForce = runnerOverride (
      { pkgs, ... }:
      {
        microvm.hypervisor = "cloud-hypervisor";
        microvm.runner.cloud-hypervisor = lib.mkForce (pkgs.writeShellScriptBin "my-ch-runner" "");
      }
    );
    untouched = runnerOverride { };
  };

  # guest.enable = false leaves the guest's configuration alone; its runner is still declared.
  guestDisabledSpec =
    (guest [
      {
        networking.hostName = "noguest";
        microvm.guest.enable = false;
      }
    ]).microvm.runnerSpec.qemu;

  # Per hypervisor: the features the Nix checks refuse for `everyFeature`, and its spec built
  # without those checks, for the generator to judge the same VM.
  capabilityCrossCheck = lib.genAttrs microvmLib.hypervisors (hypervisor: {
    refused = map (v: v.feature) (microvmLib.violations hypervisor everyFeature.microvm);
    spec = microvmLib.runnerSpec {
      pkgs = standIns.pkgsFor "x86_64-linux";
      microvmConfig = everyFeature.microvm // {
        hostName = "every";
        inherit hypervisor;
      };
      checkCapabilities = false;
    };
  });

  flake = {
    nixosModules = builtins.attrNames flakeOutputs.nixosModules;
    nixosConfigurations = builtins.attrNames flakeOutputs.nixosConfigurations;
    packages = lib.mapAttrs (_: lib.mapAttrs (_: package: package.name)) flakeOutputs.packages;
    checks = lib.mapAttrs (_: lib.mapAttrs (_: check: check.name)) flakeOutputs.checks;
    templates = lib.mapAttrs (_: template: baseNameOf template.path) flakeOutputs.templates;
    overlay = (flakeOutputs.overlays.default (standIns.pkgsFor "x86_64-linux") { }).microvm-codegen.name;
    formatter = builtins.attrNames flakeOutputs.formatter;
    hypervisors = flakeOutputs.lib.hypervisors;
    # mkGuest, as `lib.mkGuest` (with a system) and as mvm spells it, `lib.<system>.mkGuest`.
    mkGuest =
      let
        args = {
          name = "flake-guest";
          services.idle.command = "sleep infinity";
        };
      in
      {
        top = (flakeOutputs.lib.mkGuest (args // { system = "x86_64-linux"; })).name;
        perSystem = (flakeOutputs.lib.x86_64-linux.mkGuest args).name;
        systems = builtins.attrNames (lib.filterAttrs (_: v: v ? mkGuest) flakeOutputs.lib);
      };
  };

  host = import ./host.nix { inherit lib standIns ciTokenFile; };

  # microvm.ephemeral: every volume's default, the one of the writable store overlay included;
  # a volume may still say ephemeral = false.
  ephemeralVm =
    map (v: lib.filterAttrs (n: _: n == "image" || n == "ephemeral") v)
      (specWith {
        microvm.ephemeral = true;
        microvm.writableStoreOverlay = "/nix/.rw-store";
        microvm.volumes = [
          {
            image = "store-overlay.img";
            mountPoint = "/nix/.rw-store";
            size = 2048;
          }
          {
            image = "cache.img";
            mountPoint = "/var/cache";
            size = 512;
            ephemeral = false;
          }
        ];
      }).volumes;
  fleet = import ./fleet.nix { inherit lib standIns microvmLib; };

  # A share's securityModel outside its enum: read only on 9p shares, so it evaluates on a
  # virtiofs share (as in microvm.nix) and fails on a 9p one.
  securityModelOutsideItsEnum =
    lib.mapAttrs
      (
        _: proto:
        (specWith {
          microvm.shares = [
            {
              tag = "data";
              source = "/srv/data";
              mountPoint = "/data";
              inherit proto;
              securityModel = "mapped-xattr";
            }
          ];
        }).shares
      )
      {
        virtiofs = "virtiofs";
        ninep = "9p";
      };

  # mvm's hello example (issue 10), as our guest options, and the mistakes it can make.
  guestServices = {
    services = lib.mapAttrs (_: unit: {
      inherit (unit)
        wantedBy
        after
        environment
        unitConfig
        ;
      serviceConfig = lib.mapAttrs (
        key: value: if builtins.elem key [ "ExecStart" "ExecStartPre" ] then toString value else value
      ) unit.serviceConfig;
    }) (lib.getAttrs [ "hello" "health-hello" "microvm-ready" ] helloGuest.systemd.services);
    scripts = {
      start = helloGuest.systemd.services.hello.serviceConfig.ExecStart.text;
      preStart = helloGuest.systemd.services.hello.serviceConfig.ExecStartPre.text or null;
      check = helloGuest.systemd.services.health-hello.serviceConfig.ExecStart.text;
      ready = helloGuest.systemd.services.microvm-ready.serviceConfig.ExecStart.text;
    };
    timers = helloGuest.systemd.timers;
    users = lib.mapAttrs (_: u: { inherit (u) isSystemUser group; }) helloGuest.users.users;
    groups = builtins.attrNames helloGuest.users.groups;
    spec = {
      inherit (helloGuest.microvm.runnerSpec.qemu) vsock kernelParams;
      bridge = helloGuest.microvm.runnerSpec.qemu.tools.microvm-notify-bridge or null;
    };
    toplevel = "${helloGuest.system.build.toplevel}";
    # A check named after no service; readiness without vsock.
    typo = specWith (
      { pkgs, ... }:
      lib.recursiveUpdate (helloModule pkgs) {
        microvm.healthChecks.helo.healthCmd = "true";
      }
    );
    noVsock = specWith (
      { pkgs, ... }:
      lib.recursiveUpdate (helloModule pkgs) {
        microvm.vsock.cid = null;
        microvm.readiness.enable = true;
      }
    );
    vfkit =
      (guest [
        (
          { pkgs, ... }:
          lib.recursiveUpdate (helloModule pkgs) {
            microvm.hypervisor = "vfkit";
          }
        )
      ]).system.build.toplevel.outPath;
  };

  # `microvm up` (issue 11): the unit that mounts and writes what the runner announces, in the
  # hello guest; which of its units read the env file it writes; and a guest that is no guest.
  guestUp =
    let
      unit = helloGuest.systemd.services.microvm-up;
    in
    {
      unit = {
        inherit (unit)
          wantedBy
          after
          before
          conflicts
          unitConfig
          ;
        path = map (p: p.name) unit.path;
        serviceConfig = unit.serviceConfig // {
          ExecStart = toString unit.serviceConfig.ExecStart;
        };
      };
      script = unit.serviceConfig.ExecStart.text;
      shared = builtins.readFile ../../nixos-modules/microvm/up-announcements.sh;
      envReaders = builtins.attrNames (
        lib.filterAttrs (
          _: u: (u.serviceConfig.EnvironmentFile or null) == "-/run/microvm/env"
        ) helloGuest.systemd.services
      );
      bare = bare.systemd.services ? microvm-up;
      notAGuest =
        (guest [
          {
            networking.hostName = "not-a-guest";
            microvm.guest.enable = false;
          }
        ]).systemd.services ? microvm-up;
    };

  # NixOS options misused next to the guest module; each must fail to evaluate, as in NixOS.
  mistyped = {
    kernelParam = specWith { boot.kernelParam = [ "quiet" ]; };
    hostname = specWith { networking.hostname = "x"; };
    fileSystemDevices = specWith { fileSystems."/data".devices = "/dev/vdb"; };
    kernelParamsString = specWith { boot.kernelParams = "quiet"; };
    # Read by nothing of ours: found by the toplevel, which needs every option's value.
    autologinUserInt = specWith { services.getty.autologinUser = 0; };
    # Two definitions of a systemd unit key that are neither equal nor all lists.
    unitKeyConflict = specWith {
      systemd.services.nix-daemon.serviceConfig.Nice = lib.mkMerge [
        5
        [ 6 ]
      ];
    };
  };

  # Lists several of our modules define, merged as NixOS merges them.
  kernelModuleLists = {
    # system.nix and store-disk.nix
    available = graphicsGuest.boot.initrd.availableKernelModules;
    # system.nix and graphics.nix
    kernel = graphicsGuest.boot.kernelModules;
    initrd = graphicsGuest.boot.initrd.kernelModules;
    storeOnDisk = graphicsGuest.microvm.storeOnDisk;
    storeDiskType = graphicsGuest.microvm.storeDiskType;
    # The toplevel evaluates: every NixOS option's value merges and has its type.
    toplevel = "${graphicsGuest.system.build.toplevel}";
  };

  # The NixOS settings the modules make in the other guests, and their toplevels.
  nixosSettings = {
    overlay = {
      toplevel = "${overlayGuest.system.build.toplevel}";
      store = pick [
        "neededForBoot"
        "overlay"
      ] overlayGuest.fileSystems."/nix/store";
      roStore = pick [
        "device"
        "fsType"
        "neededForBoot"
      ] overlayGuest.fileSystems."/nix/.ro-store";
      rwStore = pick [ "neededForBoot" ] overlayGuest.fileSystems."/nix/.rw-store";
      initrdKernelModules = overlayGuest.boot.initrd.kernelModules;
      nixDaemon = overlayGuest.systemd.services.nix-daemon.enable;
    };
    hostStore = {
      toplevel = "${hostStoreGuest.system.build.toplevel}";
      store = pick [
        "device"
        "fsType"
        "options"
        "neededForBoot"
      ] hostStoreGuest.fileSystems."/nix/store";
      initrdSystemd = hostStoreGuest.boot.initrd.systemd.enable;
      mounts = map (pick [
        "what"
        "where"
        "overrideStrategy"
        "unitConfig"
      ]) hostStoreGuest.systemd.mounts;
      switch = hostStoreGuest.system.switch.enable;
      networks = hostStoreGuest.systemd.network.networks;
      powerKey = hostStoreGuest.services.logind.settings.Login.HandlePowerKey;
      blacklisted = hostStoreGuest.boot.blacklistedKernelModules;
      generators = hostStoreGuest.systemd.generators;
      documentation = hostStoreGuest.documentation.enable;
    };
    rosetta = {
      toplevel = "${rosettaGuest.system.build.toplevel}";
      enable = rosettaGuest.virtualisation.rosetta.enable;
    };
  };

  # The runner of a guest as buildRunner makes it: with the evaluator plugin loaded, the files
  # it rendered (passthru.files) next to the spec; without, the spec only. Also the guest's
  # failed assertions, which the plugin's microvmValidate decides where it is loaded.
  evaluatorPlugin = lib.genAttrs [ "qemu" "cloud-hypervisor" "firecracker" ] (
    hypervisor:
    let
      vm = guest [
        {
          networking.hostName = "plugin";
          microvm = {
            inherit hypervisor;
            volumes = [
              {
                image = "var.img";
                mountPoint = "/var";
                size = 64;
              }
            ];
            interfaces = [
              {
                type = "tap";
                id = "vm-plugin";
                mac = "02:00:00:00:00:01";
              }
            ];
          };
        }
      ];
      runner = vm.microvm.declaredRunner;
    in
    {
      plugin = builtins ? microvmRender;
      spec = builtins.toJSON runner.passthru.spec;
      files = runner.passthru.files or null;
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) vm.assertions);
    }
  );
  # The plugin's runner derivation as its builder gets it: buildRunner with a runCommand that
  # hands back its environment and script, so a test can run that script on them.
  evaluatorPluginBuilder =
    let
      capture = name: env: script: {
        type = "derivation";
        inherit name script;
        outPath = "/stand-in/${name}";
        drvPath = "/stand-in/${name}.drv";
        env = builtins.removeAttrs env [
          "passthru"
          "meta"
        ];
        spec = builtins.toJSON env.passthru.spec;
      };
      vm = guest [
        {
          networking.hostName = "builder";
          microvm = {
            vmHostPackages = standIns.pkgsFor "x86_64-linux" // {
              runCommand = capture;
            };
            volumes = [
              {
                image = "var.img";
                mountPoint = "/var";
                size = 64;
              }
            ];
          };
        }
      ];
    in
    {
      inherit (vm.microvm.runner.qemu) script env spec;
    };
  # With the plugin, the generator's refusal of a VM (firecracker has no 9p) is the
  # evaluation error.
  evaluatorPluginRefusal = map (a: a.message) (builtins.filter (a: !a.assertion) firecracker9p.assertions);

  coverage = {
    tableFeatures = builtins.attrNames microvmLib.table.features;
    nixFeatures = builtins.attrNames (microvmLib.featureUses bare.microvm);
    tableHypervisors = builtins.attrNames microvmLib.table.hypervisors;
    hypervisors = microvmLib.hypervisors;
    examples = builtins.attrNames examples;
    # Features the cross-check's VM leaves unused, so it could not show Nix and the generator agree.
    unusedByEveryFeature = builtins.attrNames (
      lib.filterAttrs (_: uses: uses == [ ]) (microvmLib.featureUses everyFeature.microvm)
    );
  };
}
