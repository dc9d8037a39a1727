# microvm.optimize.enable: a smaller closure and a faster boot for guests that are rebuilt
# rather than maintained.
{ config, lib, ... }:

let
  cfg = config.microvm;
  hostStoreShared = lib.any (share: share.source == "/nix/store") cfg.shares;
  # A new system can be switched to over ssh only when the guest sees the host's store.
  canSwitchViaSsh = config.services.openssh.enable && hostStoreShared;
in
# Not carried over: microvm.nix also adds a nixpkgs overlay building stratovirt without gtk3.
# An overlay set here breaks configurations that pass their own `nixpkgs.pkgs`; set
# `microvm.stratovirt.package` instead.
lib.mkIf (cfg.guest.enable && cfg.optimize.enable) {
  documentation.enable = lib.mkDefault false;

  boot = {
    # systemd in the initrd boots faster; it fails to mount /nix/store on crosvm and kvmtool
    # (and alioth, vfkit are untested), so those keep the scripted initrd.
    initrd.systemd.enable = lib.mkDefault (
      builtins.elem cfg.hypervisor [
        "qemu"
        "cloud-hypervisor"
        "firecracker"
        "stratovirt"
      ]
    );
    initrd.systemd.tpm2.enable = lib.mkDefault false;
    # One serial console is all a microVM has.
    kernelParams = [ "8250.nr_uarts=1" ];
    swraid.enable = lib.mkDefault false;
  };

  networking.useNetworkd = lib.mkDefault true;

  systemd = {
    # wait-online waits for interfaces a microVM may never configure (systemd issue 29388).
    network.wait-online.enable = lib.mkDefault false;
    tpm2.enable = lib.mkDefault false;
  };

  # switch-to-configuration and its dependencies leave the closure where it cannot be used.
  system.switch.enable = lib.mkIf (!canSwitchViaSsh) (lib.mkDefault false);
}
