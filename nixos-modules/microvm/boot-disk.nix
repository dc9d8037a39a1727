# A GPT disk image whose EFI system partition holds the kernel, the initrd and a systemd-boot
# (boot loader specification) entry, for hypervisors that cannot boot a kernel directly. No
# runner uses it yet. Built with mtools, without a VM or loop devices.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.microvm;
  inherit (config.system.boot.loader) kernelFile;
  kernel = "${cfg.kernel}/${kernelFile}";
  initrdName = baseNameOf cfg.initrdPath;
  buildPkgs = pkgs.buildPackages;
in
{
  options.microvm.bootDisk = lib.mkOption {
    type = lib.types.path;
    description = ''
      A GPT disk image with an EFI system partition holding the kernel, the initrd and a
      boot loader entry; for hypervisors without direct kernel boot.
    '';
  };

  config = lib.mkIf cfg.guest.enable {
    microvm.bootDisk =
      buildPkgs.runCommand "microvm-bootdisk.img"
        {
          nativeBuildInputs = [
            buildPkgs.dosfstools
            buildPkgs.mtools
            buildPkgs.util-linux
          ];
        }
        ''
          # The partition: the files plus 8 MiB for the FAT and slack, in whole MiB.
          bytes=$(( $(stat -L -c %s ${kernel}) + $(stat -L -c %s ${cfg.initrdPath}) ))
          esp_mib=$(( bytes / 1048576 + 8 ))
          mkfs.vfat --invariant -C -n ESP esp.img $(( esp_mib * 1024 ))

          cat > loader.conf <<END
          default *.conf
          END
          cat > entry.conf <<END
          title microvm (${config.system.nixos.label})
          linux /${kernelFile}
          initrd /${initrdName}
          options ${lib.concatStringsSep " " cfg.kernelParams}
          END
          # Fixed ids and times, so the same inputs give the same image.
          touch -d @1 loader.conf entry.conf
          mmd -i esp.img ::/loader ::/loader/entries
          mcopy -m -i esp.img loader.conf ::/loader/
          mcopy -m -i esp.img entry.conf ::/loader/entries/
          mcopy -m -i esp.img ${kernel} ::/${kernelFile}
          mcopy -m -i esp.img ${cfg.initrdPath} ::/${initrdName}

          # 1 MiB before the partition for the GPT, 1 MiB after it for its backup.
          truncate -s $(( esp_mib + 2 ))M "$out"
          sfdisk --quiet "$out" <<END
          label: gpt
          label-id: 6D696372-6F76-6D2D-626F-6F742D646973
          start=2048, size=$(( esp_mib * 2048 )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6D696372-6F76-6D2D-6573-702D70617274, name=ESP
          END
          dd if=esp.img of="$out" bs=1M seek=1 conv=notrunc status=none
        '';
  };
}
