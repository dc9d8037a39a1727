# The read-only store disk: an erofs or squashfs image of the system's closure, built with
# pkgs.runCommand (its contents are known at evaluation time from closureInfo, so nothing is
# read back into evaluation), and the registration of that closure in the guest's Nix database.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.microvm;
  inherit (config.system.build) toplevel;

  closureInfo = pkgs.closureInfo { rootPaths = [ toplevel ]; };
  # The image holds the system and, when the guest has Nix, the registration of its paths.
  contents = pkgs.closureInfo {
    rootPaths = [ toplevel ] ++ lib.optional config.nix.enable closureInfo;
  };

  buildPkgs = pkgs.buildPackages;
  # mkfs.erofs compresses on several threads unless -Ededupe asks for the single-threaded mode.
  erofsUtils =
    if builtins.elem "-Ededupe" cfg.storeDiskErofsFlags then
      buildPkgs.erofs-utils
    else
      buildPkgs.erofs-utils.overrideAttrs (old: {
        configureFlags = (old.configureFlags or [ ]) ++ [ "--enable-multithreading" ];
      });

  mkfs = {
    erofs = {
      tool = erofsUtils;
      command = "mkfs.erofs ${lib.escapeShellArgs cfg.storeDiskErofsFlags} -T 0 --all-root -L nix-store --mount-point=/nix/store \"$out\" store";
    };
    # The squashfs flags may name $NIX_BUILD_CORES, so they are expanded by the shell.
    squashfs = {
      tool = buildPkgs.squashfs-tools-ng;
      command = "gensquashfs ${lib.concatStringsSep " " cfg.storeDiskSquashfsFlags} -D store --all-root -q \"$out\"";
    };
  };
  format = mkfs.${cfg.storeDiskType};
in
{
  options.microvm.storeDisk = lib.mkOption {
    type = lib.types.path;
    description = ''
      The store disk image (built when `storeOnDisk`): the system's closure as an erofs or
      squashfs filesystem, attached read-only as the first disk.
    '';
  };

  config = lib.mkMerge [
    # The runners are declared without guest.enable too, and they boot from the store disk.
    (lib.mkIf cfg.storeOnDisk {
      # The hardened profile forbids erofs (it blacklists the module); it is recognised by its
      # L1 data cache setting because reading the blacklist here would recurse.
      microvm.storeDiskType = lib.mkDefault (
        if config.security.virtualisation.flushL1DataCache == "always" then "squashfs" else "erofs"
      );

      microvm.storeDisk =
        buildPkgs.runCommand "microvm-store-disk.${cfg.storeDiskType}"
          {
            nativeBuildInputs = [ format.tool ];
            passthru.regInfo = closureInfo;
            # The image holds copies of the paths, not references to them.
            __structuredAttrs = true;
            unsafeDiscardReferences.out = true;
          }
          ''
            mkdir store
            while read -r path; do
              cp -a "$path" store/
            done < ${contents}/store-paths
            ${format.command}
          '';
    })

    (lib.mkIf (cfg.guest.enable && cfg.storeOnDisk) {
      boot.initrd.availableKernelModules = [ cfg.storeDiskType ];
    })

    (lib.mkIf (cfg.guest.enable && cfg.registerClosure && config.nix.enable) {
      microvm.kernelParams = [ "regInfo=${closureInfo}/registration" ];
      boot.postBootCommands = ''
        for word in $(cat /proc/cmdline); do
          case "$word" in
            regInfo=*) ${config.nix.package.out}/bin/nix-store --load-db < "''${word#regInfo=}" ;;
          esac
        done
      '';
    })
  ];
}
