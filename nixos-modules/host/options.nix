# Options of the host module: declared VMs, the state directory, autostart, and how the
# generated units run the VMs. Same names, types and defaults as microvm.nix's host options.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) literalExpression mkOption types;
  hostPkgs = pkgs;
  microvmLib = import ../../lib { inherit lib; };
in
{
  options.microvm = {
    host.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to set up this host to run microVMs: the `microvm` user, the state directory,
        the generated systemd units and the `microvm` command.
      '';
    };

    host.startupTimeout = mkOption {
      type = types.ints.positive;
      default = 150;
      description = "Seconds a VM's `microvm@` unit may take to start.";
    };

    host.shutdownTimeout = mkOption {
      type = types.ints.positive;
      default = 60;
      description = ''
        Seconds `microvm-shutdown` waits for a guest to power off when its unit stops. systemd
        kills what is left 15 seconds after that.
      '';
    };

    host.useNotifySockets = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Make every `microvm@` unit `Type=notify`, for all VMs including imperative ones. A VM
        that never notifies then fails to start after `host.startupTimeout`.
      '';
    };

    host.codegenPackage = mkOption {
      type = types.package;
      default = microvmLib.codegenPackage hostPkgs;
      defaultText = literalExpression "pkgs.microvm-codegen";
      description = "The generator that writes the host's units, and the `microvm` command.";
    };

    host.evaluatorPlugin.enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Load microvm-codegen's evaluator plugin into this host's Nix (`nix.settings.plugin-files`):
        `builtins.microvmValidate` and `builtins.microvmRender`, so runners are checked by the
        generator at evaluation time and built without it. Needs a Nix >= 2.24 (`nix.package`)
        built with its C API, the Nix the plugin is built against. Nothing requires it.
      '';
    };

    host.evaluatorPlugin.package = mkOption {
      type = types.package;
      default =
        hostPkgs.microvm-nix-plugin
          or (hostPkgs.callPackage ../../lib/nix-plugin.nix { nix = config.nix.package; });
      defaultText = literalExpression "pkgs.microvm-nix-plugin, built against config.nix.package";
      description = "The evaluator plugin loaded by `host.evaluatorPlugin.enable`.";
    };

    host.spec = mkOption {
      type = types.attrs;
      readOnly = true;
      description = ''
        The host spec (the JSON document `microvm-codegen host` reads, as an attrset): the
        state directory, the units' settings and the declared VMs.
      '';
    };

    host.package = mkOption {
      type = types.package;
      readOnly = true;
      description = "The generated host package: systemd units, helper scripts, the declared VMs.";
    };

    host.evalGuest = mkOption {
      type = types.functionTo types.attrs;
      internal = true;
      default =
        { name, vm }:
        import "${vm.nixpkgs}/nixos/lib/eval-config.nix" {
          inherit (vm) pkgs specialArgs;
          # With a package set the guest's system comes from it; without, it is the host's.
          system = if vm.pkgs == null then hostPkgs.stdenv.hostPlatform.system else null;
          modules = [
            { networking.hostName = lib.mkDefault name; }
            ../microvm
            vm.config
          ]
          ++ vm.extraModules;
          prefix = [
            "microvm"
            "vms"
            name
            "config"
          ];
        };
      description = "How a fully declarative VM's configuration is evaluated (tests replace it).";
    };

    vms = mkOption {
      type = types.attrsOf (
        types.submodule (
          { config, ... }:
          {
            options = {
              evaluatedConfig = mkOption {
                type = types.nullOr types.unspecified;
                default = null;
                description = "An already evaluated NixOS system of the guest; its `config` is used.";
              };

              config = mkOption {
                type = types.nullOr types.deferredModule;
                default = null;
                description = ''
                  The guest's NixOS configuration, evaluated with the host's nixpkgs: a fully
                  declarative VM, installed and updated with the host.
                '';
              };

              nixpkgs = mkOption {
                type = types.path;
                default = if config.pkgs != null then config.pkgs.path else hostPkgs.path;
                defaultText = literalExpression "vms.<name>.pkgs.path or pkgs.path";
                description = "The nixpkgs a fully declarative guest is evaluated with.";
              };

              pkgs = mkOption {
                type = types.nullOr types.unspecified;
                default = hostPkgs;
                defaultText = literalExpression "pkgs";
                description = "The guest's package set; it decides the guest's system.";
              };

              specialArgs = mkOption {
                type = types.attrsOf types.unspecified;
                default = { };
                description = "specialArgs of the guest's evaluation.";
              };

              extraModules = mkOption {
                type = types.listOf types.deferredModule;
                default = [ ];
                description = "More modules for a fully declarative guest.";
              };

              flake = mkOption {
                type = types.nullOr types.path;
                default = null;
                description = "The flake whose `nixosConfigurations.<name>` is the guest.";
              };

              updateFlake = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = ''
                  A flake reference written to the VM's state directory for later `microvm update`.
                  With it the host installs the VM only once, while it has no installed runner.
                '';
              };

              autostart = mkOption {
                type = types.bool;
                default = true;
                description = "Start the VM at boot (add it to `microvm.autostart`).";
              };

              restartIfChanged = mkOption {
                type = types.bool;
                default = config.config != null;
                defaultText = literalExpression "vms.<name>.config != null";
                description = "Restart the VM when a host switch changes it.";
              };

              # Set by the host over the guest: the same guest on hosts of different sizes (./fleet.nix).
              overrides = mkOption {
                type = types.submodule {
                  options = {
                    vcpu = mkOption {
                      type = types.nullOr types.ints.positive;
                      default = null;
                      description = "Virtual CPUs of the VM on this host, over the guest's `microvm.vcpu`.";
                    };
                    mem = mkOption {
                      type = types.nullOr types.ints.positive;
                      default = null;
                      description = "RAM in MiB of the VM on this host, over the guest's `microvm.mem`.";
                    };
                    hypervisor = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "Hypervisor of the VM on this host, over the guest's `microvm.hypervisor`.";
                    };
                    interfaces = mkOption {
                      type = types.nullOr (types.listOf types.attrs);
                      default = null;
                      description = "Network interfaces of the VM on this host; replace the guest's `microvm.interfaces`.";
                    };
                    volumes = mkOption {
                      type = types.nullOr (types.listOf types.attrs);
                      default = null;
                      description = "Volumes of the VM on this host; replace the guest's `microvm.volumes`.";
                    };
                    shares = mkOption {
                      type = types.nullOr (types.listOf types.attrs);
                      default = null;
                      description = "Shares of the VM on this host; replace the guest's `microvm.shares`.";
                    };
                  };
                };
                default = { };
                description = ''
                  Settings of this VM that the host decides, over what its guest configuration says
                  (set with priority 50: above plain definitions, below `mkForce`). The guest's own
                  option types check them.
                '';
              };
            };
          }
        )
      );
      default = { };
      description = "microVMs declared in the host's configuration, by name.";
    };

    stateDir = mkOption {
      type = types.path;
      default = "/var/lib/microvms";
      description = "The directory holding one directory per VM (its runner, sockets and volumes). An absolute path written normalised: no `.` or `..` components, `//` or trailing `/` (systemd refuses a WorkingDirectory= that is not normalised).";
    };

    autostart = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = ''
        VMs `microvms.target` starts, declared or created with `microvm create`. Every VM of
        `microvm.vms` with `autostart = true` is added.
      '';
    };
  };
}
