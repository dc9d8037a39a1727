# microvm.vfkit.rosetta.enable, guest side: binfmt for x86_64 through Rosetta's share.
{ config, lib, ... }:

lib.mkIf (config.microvm.hypervisor == "vfkit" && config.microvm.vfkit.rosetta.enable) {
  virtualisation.rosetta.enable = true;
}
