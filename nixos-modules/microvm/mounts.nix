# Filesystems: / on tmpfs, /nix/store from the store disk or the host's store (optionally under a
# writable overlay), the volumes and the shares.
{ config, lib, ... }:

let
  cfg = config.microvm;
  inherit (cfg) storeOnDisk writableStoreOverlay;
  microvmLib = import ../../lib { inherit lib; };

  overlay = writableStoreOverlay != null;
  hostStoreShares = builtins.filter (share: share.source == "/nix/store") cfg.shares;
  hostStore =
    if hostStoreShares != [ ] then
      builtins.head hostStoreShares
    else
      throw "microvm: storeOnDisk is false, but no share has source = \"/nix/store\"; share the host's store or set storeOnDisk = true";

  # erofs images carry the label nix-store; squashfs has no labels, but the store disk is vda.
  storeDevice = if cfg.storeDiskType == "erofs" then "/dev/disk/by-label/nix-store" else "/dev/vda";
  storeDisk = {
    device = storeDevice;
    fsType = cfg.storeDiskType;
    neededForBoot = true;
    noCheck = true;
  };
  readOnlyStore = if storeOnDisk then "/nix/.ro-store" else hostStore.mountPoint;
  overlayOnVirtiofs = lib.any (
    share: share.mountPoint == writableStoreOverlay && share.proto == "virtiofs"
  ) cfg.shares;

  # A serial names the disk most reliably (udev's by-id link keeps its first 20 bytes), then
  # the filesystem label, then the order of the disks.
  volumeDevice =
    volume:
    if volume.serial != null then
      "/dev/disk/by-id/virtio-${builtins.substring 0 20 volume.serial}"
    else if volume.label != null then
      "/dev/disk/by-label/${volume.label}"
    else
      "/dev/vd${volume.letter}";

  volumeMounts = map (volume: {
    name = volume.mountPoint;
    value = {
      device = volumeDevice volume;
      inherit (volume) fsType;
    }
    // lib.optionalAttrs (volume.mountPoint == writableStoreOverlay) { neededForBoot = true; };
  }) (builtins.filter (volume: volume.mountPoint != null) (microvmLib.withDriveLetters cfg));

  shareOptions = {
    "9p" = [
      "trans=virtio"
      "version=9p2000.L"
      "msize=65536"
    ];
    virtiofs = [ "defaults" ];
  };
  shareMounts = map (share: {
    name = share.mountPoint;
    value = {
      device = share.tag;
      fsType = share.proto;
      options = shareOptions.${share.proto} ++ [ "x-systemd.after=systemd-modules-load.service" ];
    }
    // lib.optionalAttrs (share.source == "/nix/store" || share.mountPoint == writableStoreOverlay) {
      neededForBoot = true;
    };
  }) cfg.shares;
in
lib.mkIf cfg.guest.enable {
  fileSystems = lib.mkMerge [
    {
      "/" = lib.mkDefault {
        device = "rootfs";
        fsType = "tmpfs";
        options = [ "size=50%,mode=0755" ];
        neededForBoot = true;
      };
    }
    (lib.mkIf (storeOnDisk && !overlay) {
      "/nix/store" = storeDisk // {
        options = [ "x-systemd.after=systemd-modules-load.service" ];
      };
    })
    (lib.mkIf (storeOnDisk && overlay) {
      "/nix/.ro-store" = storeDisk // {
        options = [
          "ro"
          "x-systemd.after=systemd-modules-load.service"
        ];
      };
    })
    # The host's store shared somewhere else: bind it to /nix/store.
    (lib.mkIf (!storeOnDisk && !overlay && hostStore.mountPoint != "/nix/store") {
      "/nix/store" = {
        device = hostStore.mountPoint;
        fsType = hostStore.proto;
        options = [
          "ro"
          "bind"
        ];
        neededForBoot = true;
      };
    })
    (lib.mkIf overlay {
      "/nix/store" = {
        neededForBoot = true;
        overlay = {
          lowerdir = [ readOnlyStore ];
          upperdir = "${writableStoreOverlay}/store";
          workdir = "${writableStoreOverlay}/work";
        };
        # An overlay upper layer on virtiofs keeps its xattrs in the user namespace.
        options = lib.mkIf overlayOnVirtiofs [ "userxattr" ];
      };
    })
    (builtins.listToAttrs volumeMounts)
    (builtins.listToAttrs shareMounts)
  ];

  # With the host's store shared and the systemd initrd, /nix/store must not be unmounted
  # before everything else is, or qemu's shutdown hangs.
  systemd.mounts = lib.mkIf (config.boot.initrd.systemd.enable && !storeOnDisk && !overlay) [
    {
      what = "store";
      where = "/nix/store";
      overrideStrategy = "asDropin";
      unitConfig.DefaultDependencies = false;
    }
  ];
}
