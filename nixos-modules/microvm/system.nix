# Guest system integration: what a NixOS system needs to boot as a microVM of each hypervisor.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.microvm;
  onX86_64 = pkgs.stdenv.hostPlatform.isx86_64;
in
lib.mkMerge [
  {
    # The runners' command line. With a store disk the toplevel's context is dropped, so the
    # runner does not keep the uncompressed closure alive (the disk holds it).
    microvm.kernelParams =
      let
        toplevel =
          if cfg.storeOnDisk then
            builtins.unsafeDiscardStringContext config.system.build.toplevel
          else
            config.system.build.toplevel;
      in
      config.boot.kernelParams ++ [ "init=${toplevel}/init" ];
  }

  (lib.mkIf cfg.guest.enable {
    # The runners boot the kernel directly; there is no boot loader.
    boot.loader.grub.enable = false;

    boot.initrd.kernelModules = [
      # virtio transports: mmio (qemu's microvm machine, firecracker) and PCI (the rest)
      "virtio_mmio"
      "virtio_pci"
      # the store disk and the volumes
      "virtio_blk"
      # shares
      "9pnet_virtio"
      "9p"
      "virtiofs"
    ]
    # firecracker's shutdown sends Ctrl-Alt-Del through the i8042 keyboard controller.
    ++ lib.optional (onX86_64 && cfg.hypervisor == "firecracker") "i8042"
    ++ lib.optional (cfg.writableStoreOverlay != null) "overlay";

    # vsock without virtio-PCI devices (ssh over vsock)
    boot.initrd.availableKernelModules = [ "vmw_vsock_virtio_transport" ];

    # microvm-shutdown presses the ACPI power button (qemu) or sends a power-button event;
    # logind powers the guest off on it. The ACPI button driver must be there to see it.
    boot.kernelModules = [ "button" ];
    services.logind.settings.Login.HandlePowerKey = lib.mkDefault "poweroff";

    # Slow to load, rarely useful in a VM.
    boot.blacklistedKernelModules = [
      "rfkill"
      "intel_pstate"
    ]
    ++ lib.optional (!cfg.graphics.enable) "drm";

    systemd = {
      # Nix can only build where /nix/store is writable.
      services.nix-daemon.enable = lib.mkDefault (cfg.writableStoreOverlay != null);
      sockets.nix-daemon.enable = lib.mkDefault (cfg.writableStoreOverlay != null);
      # Slow at boot, and there is no persistent pstore.
      services.mount-pstore.enable = false;
      # There is no partition table to discover.
      generators.systemd-gpt-auto-generator = "/dev/null";
    };

    environment.etc."machine-id" = lib.mkIf (cfg.machineId != null) {
      text = lib.replaceStrings [ "-" ] [ "" ] cfg.machineId + "\n";
    };
    # systemd derives the host id from the machine id the same way.
    networking.hostId = lib.mkIf (cfg.machineId != null) (
      lib.mkDefault (builtins.substring 0 8 cfg.machineId)
    );
  })
]
