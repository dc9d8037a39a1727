# The Nix library of this flake (`microvm.lib`): the hypervisor list, the capability table, the
# runner spec and `buildRunner`. It takes only nixpkgs' `lib`, so it evaluates without nixpkgs.
{ lib }:

let
  capabilities = import ./capabilities.nix { inherit lib; };
in
rec {
  hypervisors = import ./hypervisors.nix;

  # Every hypervisor has some kind of network interface.
  hypervisorsWithNetwork = hypervisors;

  defaultFsType = "ext4";

  # The parsed capability table (lib/capabilities.json), and the checks built from it.
  inherit (capabilities) table featureUses violations;

  # The guest device node of each volume when no label or serial names it: the store disk,
  # when there is one, is the first virtio disk (vda), the volumes follow in order.
  withDriveLetters =
    { volumes, storeOnDisk, ... }:
    let
      letters = lib.stringToCharacters "abcdefghijklmnopqrstuvwxyz";
      offset = if storeOnDisk then 1 else 0;
    in
    lib.imap0 (
      i: volume:
      volume
      // {
        letter =
          if i + offset < 26 then
            builtins.elemAt letters (i + offset)
          else
            throw "microvm.volumes: more than ${toString (26 - offset)} volumes have no /dev/vdX name";
      }
    ) volumes;

  # The runner spec (an attrset for builtins.toJSON) of one VM for one hypervisor.
  # microvmConfig is `config.microvm // { hostName; hypervisor; }`.
  runnerSpec = import ./runner-spec.nix { inherit lib; };

  # The generator from a package set: its own `microvm-codegen` (the flake's overlay), else
  # built from this checkout.
  codegenPackage = pkgs: pkgs.microvm-codegen or (pkgs.callPackage ./microvm-codegen.nix { });

  # The runner package: `microvm-codegen generate` run on the spec.
  buildRunner = import ./build-runner.nix { inherit lib runnerSpec; };

  # Many hosts and the VMs placed on them, turned into nixosConfigurations, a colmena hive,
  # deploy-rs nodes, a description for `microvm fleet` and Nomad jobs (lib/fleet.nix).
  fleet = import ./fleet.nix { inherit lib; };

  # Not carried over from microvm.nix: makeMacvtap, extractOptValues and extractParamValue were
  # helpers of the Nix-side runners; the generator (codegen/src/hypervisor) does that work now.
}
