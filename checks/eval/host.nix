# Evaluation tests of the host module (tier 4): the host module evaluated with nixpkgs' lib and
# the stand-ins of ./stand-ins.nix, guests evaluated the same way. Nothing is built: the tests
# read the host spec the module writes and give it to `microvm-codegen host` themselves.
{ lib, standIns }:

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
  wrappedRunner.spec = (host { inherit wrapped; }).microvm.host.spec;
  readiness.spec = (host { inherit alpha hello; }).microvm.host.spec;
}
