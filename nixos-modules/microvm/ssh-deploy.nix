# Deployment over ssh: copy this VM's derivations to a host that runs the host module, build the
# runner there, and switch the running guest when it can be switched (sshd on, host store
# shared). Only derivation paths are taken here; nothing is built during evaluation.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (config.networking) hostName;
  inherit (config.system.build) toplevel;
  cfg = config.microvm;

  closureInfo = pkgs.closureInfo { rootPaths = [ toplevel ]; };
  paths = builtins.mapAttrs (_: builtins.unsafeDiscardStringContext) {
    closureInfoOut = closureInfo.outPath;
    closureInfoDrv = closureInfo.drvPath;
    toplevelOut = toplevel.outPath;
    toplevelDrv = toplevel.drvPath;
    nixDrv = config.nix.package.drvPath;
    runnerDrv = cfg.declaredRunner.drvPath;
  };

  nixCommand = "nix --extra-experimental-features nix-command";
  ssh = "${pkgs.openssh}/bin/ssh";
  stateDir = "/var/lib/microvms/${hostName}";

  # Parses `TARGET [--use-remote-sudo]`; sets target, sudo and sudoFlag.
  parseTarget = usage: ''
    if [ $# -lt 1 ]; then
      echo ${lib.escapeShellArg usage} >&2
      exit 2
    fi
    target=$1
    shift
    sudo=
    sudoFlag=
    if [ "''${1:-}" = --use-remote-sudo ]; then
      sudo=sudo
      sudoFlag=--use-remote-sudo
      shift
    fi
  '';

  canSwitchViaSsh =
    config.system.switch.enable
    && config.services.openssh.enable
    && lib.any (share: share.source == "/nix/store") cfg.shares;
in
{
  options.microvm.deploy = {
    installOnHost = lib.mkOption {
      type = lib.types.package;
      description = ''
        `microvm-install-on-host root@host [--use-remote-sudo]`: copies this VM's derivations to
        the host, builds its runner there and makes it the VM's `current` runner
        (/var/lib/microvms/<name>). Restart `microvm@<name>` on the host, or use `sshSwitch`.
      '';
    };

    sshSwitch = lib.mkOption {
      type = lib.types.nullOr lib.types.package;
      default = null;
      description = ''
        `microvm-switch root@vm [--use-remote-sudo] [switch|boot|test]`: switches the running
        guest to this configuration over ssh. Set only where that works: system switching on,
        sshd on, and the host's /nix/store shared with the guest.
      '';
    };

    rebuild = lib.mkOption {
      type = lib.types.nullOr lib.types.package;
      default = null;
      description = ''
        `microvm-rebuild root@host root@vm [--use-remote-sudo] [switch]`: `installOnHost`, then
        `sshSwitch` where possible, otherwise a restart of the VM on the host.
      '';
    };
  };

  config.microvm.deploy = {
    installOnHost = pkgs.writeShellScriptBin "microvm-install-on-host" ''
      set -euo pipefail
      ${parseTarget "usage: microvm-install-on-host root@host [--use-remote-sudo]"}
      echo "copying the derivations of ${hostName} to $target" >&2
      ${nixCommand} copy --no-check-sigs --to "ssh-ng://$target" --derivation \
        '${paths.closureInfoDrv}^out' '${paths.nixDrv}^out' '${paths.runnerDrv}^out'
      ${ssh} "$target" -- $sudo bash -s <<'REMOTE'
      set -euo pipefail
      mkdir -p /nix/var/nix/gcroots/microvm '${stateDir}'
      chown microvm:kvm '${stateDir}'
      chmod 0755 '${stateDir}'
      cd '${stateDir}'
      # Roots are named LINK@NAME, as `microvm` names them: no VM name has an `@`, so no other
      # VM's root has the name. A root under its old name (NAME, LINK-NAME) goes when it points
      # at this VM's link; otherwise it may be another VM's (`booted-web` was web's `booted`).
      for link in current booted old; do
        ln -sfT "${stateDir}/$link" "/nix/var/nix/gcroots/microvm/$link@${hostName}"
        legacy=${hostName}
        [ "$link" = current ] || legacy="$link-${hostName}"
        if [ "$(readlink "/nix/var/nix/gcroots/microvm/$legacy" || true)" = "${stateDir}/$link" ]; then
          rm -f "/nix/var/nix/gcroots/microvm/$legacy"
        fi
      done
      ${nixCommand} build --no-link '${paths.nixDrv}^out' '${paths.closureInfoDrv}^out' '${paths.toplevelDrv}^out'
      ${nixCommand} build -o new '${paths.runnerDrv}^out'
      if [ "$(readlink -f current || true)" = "$(readlink -f new)" ]; then
        rm new
        echo "${hostName}: the runner is unchanged" >&2
      else
        if [ -e current ]; then
          mv -T current old
        fi
        mv -T new current
        chown -h microvm:kvm current
        if [ -e old ]; then
          ${nixCommand} store diff-closures ./old ./current || true
        fi
        echo "${hostName}: installed; restart microvm@${hostName}.service to boot it" >&2
      fi
      REMOTE
    '';

    sshSwitch = lib.mkIf canSwitchViaSsh (
      pkgs.writeShellScriptBin "microvm-switch" ''
        set -euo pipefail
        ${parseTarget "usage: microvm-switch root@vm [--use-remote-sudo] [switch|boot|test]"}
        ${ssh} "$target" -- $sudo bash -s -- "''${@:-switch}" <<'REMOTE'
        set -euo pipefail
        if [ "$(cat /etc/hostname)" != ${hostName} ]; then
          echo "this is $(cat /etc/hostname), not ${hostName}" >&2
          exit 1
        fi
        nix-store --load-db < '${paths.closureInfoOut}/registration'
        nix-env -p /nix/var/nix/profiles/system --set '${paths.toplevelOut}'
        '${paths.toplevelOut}/bin/switch-to-configuration' "$1"
        REMOTE
      ''
    );

    rebuild = pkgs.writeShellScriptBin "microvm-rebuild" ''
      set -euo pipefail
      if [ $# -lt 2 ]; then
        echo "usage: microvm-rebuild root@host root@vm [--use-remote-sudo] [switch]" >&2
        exit 2
      fi
      host=$1
      vm=$2
      shift 2
      sudo=
      sudoFlag=()
      if [ "''${1:-}" = --use-remote-sudo ]; then
        sudo=sudo
        sudoFlag=(--use-remote-sudo)
        shift
      fi
      ${lib.getExe cfg.deploy.installOnHost} "$host" "''${sudoFlag[@]}"
      ${
        if cfg.deploy.sshSwitch != null then
          ''${lib.getExe cfg.deploy.sshSwitch} "$vm" "''${sudoFlag[@]}" "$@"''
        else
          ''${ssh} "$host" -- $sudo systemctl restart ${lib.escapeShellArg "microvm@${hostName}.service"}''
      }
    '';
  };
}
