# Evaluation tests of the host module (tier 4): the host module evaluated with nixpkgs' lib and
# the stand-ins of ./stand-ins.nix, guests evaluated the same way. Nothing is built: the tests
# read the host spec the module writes and give it to `microvm-codegen host` themselves.
{
  lib,
  standIns,
  ciTokenFile,
}:

let
  pkgs = standIns.pkgsFor "x86_64-linux";

  guest =
    name: modules:
    standIns.evalGuest {
      modules = [ { networking.hostName = name; } ] ++ modules;
    };

  hostWith =
    modules: vms:
    (lib.evalModules {
      modules = [
        ../../nixos-modules/host
        standIns.nixosModule
        {
          _module.args.pkgs = pkgs;
          # Fully declarative guests are evaluated with the stand-ins instead of nixpkgs.
          microvm.host.evalGuest = { name, vm }: guest name ([ vm.config ] ++ vm.extraModules);
          microvm.vms = vms;
        }
      ]
      ++ modules;
    }).config;
  host = hostWith [ ];

  # "alpha" comes already evaluated and starts at boot; "beta" is fully declarative, does not
  # autostart, and shares a directory from /srv (the hypervisor writes it).
  alpha.evaluatedConfig = guest "alpha" [
    {
      microvm.interfaces = [
        {
          type = "tap";
          id = "vm-alpha";
          mac = "02:00:00:00:aa:01";
        }
      ];
    }
  ];
  beta = {
    autostart = false;
    config.microvm.shares = [
      {
        tag = "data";
        source = "/srv/beta";
        mountPoint = "/data";
      }
    ];
  };

  # As microvm.nix users write it: the guest's declared runner replaced by a wrapper, which the
  # host installs in its place.
  wrapped.config =
    { config, pkgs, ... }:
    {
      microvm.declaredRunner = lib.mkIf true (
        pkgs.writeShellScriptBin "wrapped" ''
          exec ${config.microvm.runner.qemu}/bin/microvm-run
        ''
      );
    };

  # mvm's hello example (issue 10): services and a health check, so the guest reports readiness.
  hello.config =
    { pkgs, ... }:
    {
      microvm.vsock.cid = 3;
      microvm.services.hello.command = "${pkgs.bash}/bin/sh -c 'exec sleep infinity'";
      microvm.healthChecks.hello.healthCmd = "true";
    };

  twoVms = host { inherit alpha beta; };
  oneVm = host { inherit alpha; };

  # The evaluator plugin enabled on a host whose Nix is of `version`.
  pluginHost =
    version:
    hostWith [
      {
        microvm.host.evaluatorPlugin.enable = true;
        nix.package = pkgs.nix // {
          inherit version;
        };
      }
    ] { inherit alpha; };
  # CI runner pools (nixos-modules/host/ci-runners.nix): a GitHub pool of 3 on qemu (the token
  # as a systemd credential), a GitLab pool of 2 on firecracker (the token on a disk).
  ciHost = pools: hostWith [ { microvm.ciRunners = pools; } ] { };
  ciPools = ciHost {
    build = {
      kind = "github";
      url = "https://github.com/acme/app";
      tokenFile = ciTokenFile;
      count = 3;
      labels = [ "nix" ];
      vsockCidBase = 100;
      scratchSize = 4096;
      extraModules = [ { microvm.mem = lib.mkForce 3072; } ];
    };
    lab = {
      kind = "gitlab";
      url = "https://gitlab.example.org";
      tokenFile = ciTokenFile;
      count = 2;
      hypervisor = "firecracker";
    };
  };
  ciGuest =
    config: name:
    (config.microvm.host.evalGuest {
      inherit name;
      vm = config.microvm.vms.${name};
    }).config;
  ciPool = pool: {
    kind = "github";
    url = "https://github.com/acme/app";
    tokenFile = "/run/secrets/ci-token";
  } // pool;

  failedAssertions = config: map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
in
{
  twoVms = {
    spec = twoVms.microvm.host.spec;
    autostart = twoVms.microvm.autostart;
    tmpfiles = twoVms.systemd.tmpfiles.rules;
    user = twoVms.users.users.microvm;
    packages = map (p: p.name) twoVms.systemd.packages;
    commands = map (p: p.name) twoVms.environment.systemPackages;
    commandText = (builtins.head twoVms.environment.systemPackages).passthru.text;
    # The host's other NixOS settings, and its toplevel, which needs every NixOS option's value
    # (with NixOS's types) as building the host would.
    kernelModules = twoVms.boot.kernelModules;
    loginLimits = twoVms.security.pam.loginLimits;
    targetWantedBy = twoVms.systemd.targets.microvms.wantedBy;
    reconcileWantedBy = twoVms.systemd.services.microvm-reconcile.wantedBy;
    toplevel = "${twoVms.system.build.toplevel}";
  };
  # A NixOS setting misspelt next to the host module fails, as in NixOS.
  mistyped = (hostWith [ { users.user.microvm.isSystemUser = true; } ] { inherit alpha; }).microvm.host.spec;
  oneVm.spec = oneVm.microvm.host.spec;
  evaluatorPlugin = {
    pluginFiles = (pluginHost "2.24.15").nix.settings.plugin-files;
    failed = failedAssertions (pluginHost "2.24.15");
    toplevel = "${(pluginHost "2.24.15").system.build.toplevel}";
    tooOld = failedAssertions (pluginHost "2.18.9");
    off = oneVm.nix.settings ? plugin-files;
  };
  ciRunners = {
    spec = ciPools.microvm.host.spec;
    failed = failedAssertions ciPools;
    toplevel = "${ciPools.system.build.toplevel}";
    hostUnits = lib.filterAttrs (name: _: lib.hasPrefix "microvm@" name) ciPools.systemd.services;
    guests = lib.mapAttrs (
      name: _:
      let
        g = ciGuest ciPools name;
        hasGithub = g.services.github-runners ? ${name};
      in
      {
        failed = failedAssertions g;
        runnerSpec = g.microvm.runnerSpec.${g.microvm.hypervisor};
        githubRunner = if hasGithub then g.services.github-runners.${name} else null;
        gitlabRunner = {
          inherit (g.services.gitlab-runner) enable services;
        };
        runnerUnit =
          g.systemd.services.${if hasGithub then "github-runner-${name}" else "gitlab-runner"};
        tokenUnit = g.systemd.services.microvm-ci-token;
        # The script the GitLab runner's unit starts (a stand-in derivation keeps its text).
        gitlabOneJob = if hasGithub then null else g.systemd.services.gitlab-runner.serviceConfig.ExecStart.passthru.text;
        shares = g.microvm.shares;
        storeOnDisk = g.microvm.storeOnDisk;
        mem = g.microvm.mem;
        toplevel = "${g.system.build.toplevel}";
      }
    ) ciPools.microvm.vms;
  };
  # Refused pools: each attribute must fail to evaluate (a type error or a failed assertion).
  ciRefused = {
    badKind = (ciHost { x = ciPool { kind = "jenkins"; }; }).microvm.host.spec;
    zeroCount = (ciHost { x = ciPool { count = 0; }; }).microvm.host.spec;
    storeToken = "${(ciHost { x = ciPool { tokenFile = "/nix/store/0000-token"; }; }).system.build.toplevel}";
  };
  wrappedRunner.spec = (host { inherit wrapped; }).microvm.host.spec;
  readiness.spec = (host { inherit alpha hello; }).microvm.host.spec;
}
