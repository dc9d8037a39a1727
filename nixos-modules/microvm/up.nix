# `microvm up` regenerates a runner with other shares, volumes and `--env` without rebuilding the
# guest, and announces them on the kernel command line (`microvm.up.mount=KIND:SOURCE:GUESTPATH`,
# `microvm.up.env=BASE64`). microvm-up.service reads them early in boot (./up-announcements.sh,
# shared with the busybox test guest): it mounts the shares read-only and the volumes read-write,
# and writes /run/microvm/env before the units of `microvm.services` read it. Without such
# parameters the unit's condition fails and it is skipped.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.microvm;
  # The units that read /run/microvm/env, and may use what is mounted.
  readers =
    map (name: "${name}.service") (builtins.attrNames cfg.services)
    ++ map (name: "health-${name}.service") (builtins.attrNames cfg.healthChecks)
    ++ lib.optional (cfg.services != { }) "microvm-ready.service";
in
lib.mkIf cfg.guest.enable {
  # The 9p and virtiofs modules are loaded in the initrd (system.nix); ext4 loads on demand.
  systemd.services.microvm-up = {
    description = "Mounts and environment announced by microvm up";
    # Part of sysinit, like a local file system: every ordinary unit starts after it, and a
    # failed mount leaves the unit failed without stopping the boot.
    wantedBy = [ "sysinit.target" ];
    after = [
      "systemd-modules-load.service"
      "local-fs.target"
    ];
    before = [
      "sysinit.target"
      "shutdown.target"
    ]
    ++ readers;
    conflicts = [ "shutdown.target" ];
    path = [
      pkgs.util-linux
      pkgs.coreutils
      pkgs.iproute2
    ];
    unitConfig = {
      DefaultDependencies = false;
      # `|`: either parameter is enough.
      ConditionKernelCommandLine = [
        "|microvm.up.mount"
        "|microvm.up.env"
        "|microvm.up.net"
      ];
    };
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      ExecStart = pkgs.writeShellScript "microvm-up" (builtins.readFile ./up-announcements.sh);
      # Its lines on the console too: what was mounted where, or why not.
      StandardOutput = "journal+console";
      StandardError = "journal+console";
    };
  };
}
