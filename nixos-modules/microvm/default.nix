# The guest module (`nixosModules.microvm`): a NixOS configuration that imports it is a microVM.
# `config.microvm.declaredRunner` is its runner; `config.microvm.runner.<hypervisor>` builds it
# for any hypervisor, `config.microvm.runnerSpec.<hypervisor>` is the spec each is made from.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  microvmLib = import ../../lib { inherit lib; };
  forHypervisor = hypervisor: {
    inherit pkgs;
    microvmConfig = config.microvm // {
      inherit (config.networking) hostName;
      inherit hypervisor;
    };
    inherit (config.system.build) toplevel;
  };
in
{
  imports = [
    ./options.nix
    ./store-disk.nix
    ./boot-disk.nix
    ./system.nix
    ./mounts.nix
    ./interfaces.nix
    ./asserts.nix
    ./optimization.nix
    ./graphics.nix
    ./rosetta.nix
    ./vsock-ssh.nix
    ./services.nix
    ./up.nix
    ./ssh-deploy.nix
  ];

  config.microvm = {
    runnerSpec = lib.genAttrs microvmLib.hypervisors (
      hypervisor: microvmLib.runnerSpec (forHypervisor hypervisor)
    );
    runner = lib.genAttrs microvmLib.hypervisors (
      hypervisor: microvmLib.buildRunner (forHypervisor hypervisor)
    );
  };
}
