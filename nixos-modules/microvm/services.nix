# A guest described by what it runs, with mvm's names (`services`, `healthChecks`): each service
# becomes a systemd service running as a user of its own, each health check a oneshot service on
# a timer, and `microvm.readiness` tells the host over vsock once the guest is up.
#
# Readiness: the guest's systemd (>= 254) sends READY=1 to the `vmm.notify_socket` credential
# (the runner puts it on the kernel command line) when boot finishes. `microvm-ready.service`
# is part of boot and ends only when every critical check has passed once, so READY=1 means
# "the services answer", not "PID 1 started them". After that each check sends its state
# changes (X_MICROVM_HEALTH=<check> <passing|failing> <last output line>) to the same address;
# on the host, microvm-notify-bridge forwards them to the unit and `microvm status` shows them.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.microvm;

  userOf = name: service: if service.user != null then service.user else "svc-${name}";
  dedicatedUsers = lib.filterAttrs (_: s: s.user == null) cfg.services;

  # The address the guest's notifications go to: the host (cid 2), on the readiness port.
  notifyAddress = "vsock-stream:2:${toString cfg.readiness.port}";
  stateDir = name: "/run/microvm-health/${name}";

  serviceModule = {
    options = {
      command = mkOption {
        type = types.str;
        example = "\${pkgs.python3}/bin/python3 -m http.server 8080";
        description = "The command the service runs, by `sh -c`; it should stay in the foreground.";
      };
      preStart = mkOption {
        type = types.lines;
        default = "";
        description = "Shell commands run as root before every start of the service.";
      };
      env = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = {
          PORT = "8080";
        };
        description = ''
          Environment variables of the service. Each unit also reads `/run/microvm/env`
          (`EnvironmentFile=-/run/microvm/env`), where `microvm up --env KEY=VALUE` puts its
          overrides; being an EnvironmentFile, it wins over these.
        '';
      };
      user = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          The user the service runs as (null: a system user of its own, `svc-<name>`, made
          for it; never root unless set so).
        '';
      };
      restart = mkOption {
        type = types.enum [
          "always"
          "on-failure"
          "no"
        ];
        default = "always";
        description = ''
          When systemd restarts the service. Restarts back off from 1 s to at most 60 s and
          never give up.
        '';
      };
    };
  };

  checkModule = {
    options = {
      healthCmd = mkOption {
        type = types.str;
        example = "\${pkgs.curl}/bin/curl -sf http://localhost:8080/";
        description = "Command run by `sh -c` as the service's user; exit status 0 means healthy.";
      };
      healthIntervalSecs = mkOption {
        type = types.ints.positive;
        default = 30;
        description = "Seconds between two runs of the check.";
      };
      healthTimeoutSecs = mkOption {
        type = types.ints.positive;
        default = 10;
        description = "Seconds a run may take before it counts as failing.";
      };
      startupGraceSecs = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "Seconds after the service starts before the check first runs.";
      };
      critical = mkOption {
        type = types.bool;
        default = true;
        description = "The guest is ready only once this check has passed once.";
      };
    };
  };

  # One run of a check: its state and last output line go to the state directory, and a change
  # of state goes to the host.
  checkScript =
    name: check:
    pkgs.writeShellScript "health-${name}" ''
      out=$(${pkgs.coreutils}/bin/timeout ${toString check.healthTimeoutSecs} ${pkgs.bash}/bin/sh -c ${lib.escapeShellArg check.healthCmd} 2>&1) && state=passing || state=failing
      line=$(printf '%s\n' "$out" | ${pkgs.coreutils}/bin/tail -n 1 | ${pkgs.coreutils}/bin/tr -d '\r')
      dir=${stateDir name}
      previous=$(cat "$dir/state" 2>/dev/null || true)
      printf '%s\n' "$line" >"$dir/output"
      printf '%s\n' "$state" >"$dir/state.new" && mv "$dir/state.new" "$dir/state"
      ${lib.optionalString cfg.readiness.enable ''
        if [ "$state" != "$previous" ]; then
          NOTIFY_SOCKET=${notifyAddress} ${pkgs.systemd}/bin/systemd-notify "X_MICROVM_HEALTH=${name} $state $line" || true
        fi
      ''}
    '';

  criticalChecks = lib.filterAttrs (_: c: c.critical) cfg.healthChecks;

  # Boot ends when this does: once every critical check has passed once.
  readyScript = pkgs.writeShellScript "microvm-ready" (
    lib.concatStrings (
      lib.mapAttrsToList (name: check: ''
        ${lib.optionalString (check.startupGraceSecs > 0) "sleep ${toString check.startupGraceSecs}"}
        until [ "$(cat ${stateDir name}/state 2>/dev/null)" = passing ]; do
          ${pkgs.systemd}/bin/systemctl start health-${name}.service
          [ "$(cat ${stateDir name}/state 2>/dev/null)" = passing ] || sleep 1
        done
      '') criticalChecks
    )
    + "echo 'microvm-ready: every critical health check passed'\n"
  );

  unknownChecks = lib.filter (n: !(cfg.services ? ${n})) (builtins.attrNames cfg.healthChecks);
  didYouMean =
    name:
    let
      close = lib.filter (s: lib.strings.levenshtein name s <= 3) (builtins.attrNames cfg.services);
    in
    if close != [ ] then " Did you mean ${lib.concatMapStringsSep " or " (s: "\"${s}\"") close}?" else "";
in
{
  options.microvm = {
    services = mkOption {
      type = types.attrsOf (types.submodule serviceModule);
      default = { };
      description = ''
        Services the guest runs, as mvm describes them: each becomes the systemd service
        `<name>.service`, started at boot.
      '';
    };
    healthChecks = mkOption {
      type = types.attrsOf (types.submodule checkModule);
      default = { };
      description = ''
        Health checks of `microvm.services`, by service name: each runs as the service's
        user on a timer (`health-<name>.timer`), and its state reaches the host
        (`microvm status`, `systemctl status microvm@<vm>`).
      '';
    };
    readiness = {
      enable = mkOption {
        type = types.bool;
        default = (cfg.services != { } || cfg.healthChecks != { }) && cfg.vsock.cid != null;
        defaultText = lib.literalExpression ''(microvm.services != { } || microvm.healthChecks != { }) && microvm.vsock.cid != null'';
        description = ''
          Tell the host over vsock when the guest is ready (every critical health check passed
          once, or without checks, every service started) and each check's state changes
          afterwards. The host's `microvm@` unit is then `Type=notify`. Needs `microvm.vsock.cid`.
        '';
      };
      port = mkOption {
        type = types.ints.between 1 4294967294;
        default = 8888;
        description = ''
          The host's vsock port the guest sends to. With qemu, crosvm, kvmtool and stratovirt
          (the host kernel's vsock) every VM on a host needs a port of its own.
        '';
      };
    };
  };

  config = lib.mkMerge [
    {
      assertions = [
        {
          assertion = unknownChecks == [ ];
          message = lib.concatMapStrings (
            n: "microvm.healthChecks.${n}: there is no microvm.services.${n}.${didYouMean n}\n"
          ) unknownChecks;
        }
        {
          assertion = !cfg.readiness.enable || cfg.vsock.cid != null;
          message = "microvm.readiness.enable needs microvm.vsock.cid: readiness is sent over vsock.";
        }
      ]
      ++ lib.mapAttrsToList (name: _: {
        assertion = builtins.stringLength "svc-${name}" <= 31;
        message = "microvm.services.${name}: the name is too long for the service's user svc-${name} (at most 27 characters), or set microvm.services.${name}.user.";
      }) dedicatedUsers;
    }
    {
      users.users = lib.mapAttrs' (
        name: _:
        lib.nameValuePair "svc-${name}" {
          isSystemUser = true;
          group = "svc-${name}";
        }
      ) dedicatedUsers;
      users.groups = lib.mapAttrs' (name: _: lib.nameValuePair "svc-${name}" { }) dedicatedUsers;

      systemd.services =
        lib.mapAttrs (name: service: {
          description = "microvm service ${name}";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          environment = service.env;
          serviceConfig = {
            ExecStart = pkgs.writeShellScript "service-${name}" service.command;
            User = userOf name service;
            Restart = service.restart;
            RestartSec = "1s";
            RestartSteps = 6;
            RestartMaxDelaySec = "60s";
            EnvironmentFile = "-/run/microvm/env";
          }
          // lib.optionalAttrs (service.preStart != "") {
            # `+`: as root, whoever the service runs as.
            ExecStartPre = "+${pkgs.writeShellScript "service-${name}-pre-start" service.preStart}";
          };
          unitConfig.StartLimitIntervalSec = 0;
        }) cfg.services
        // lib.mapAttrs' (
          name: check:
          lib.nameValuePair "health-${name}" {
            description = "microvm health check ${name}";
            after = [ "${name}.service" ];
            serviceConfig = {
              Type = "oneshot";
              ExecStart = checkScript name check;
              User = userOf name (cfg.services.${name} or { user = null; });
              RuntimeDirectory = "microvm-health/${name}";
              RuntimeDirectoryPreserve = "yes";
              EnvironmentFile = "-/run/microvm/env";
            };
          }
        ) cfg.healthChecks
        // lib.optionalAttrs (cfg.services != { }) {
          microvm-ready = {
            description = "microvm guest ready";
            wantedBy = [ "multi-user.target" ];
            after = map (n: "${n}.service") (builtins.attrNames cfg.services);
            serviceConfig = {
              Type = "oneshot";
              RemainAfterExit = true;
              ExecStart = readyScript;
              TimeoutStartSec = "infinity";
            };
          };
        };

      systemd.timers = lib.mapAttrs' (
        name: check:
        lib.nameValuePair "health-${name}" {
          wantedBy = [ "timers.target" ];
          timerConfig = {
            OnActiveSec = "${toString (lib.max 1 check.startupGraceSecs)}s";
            OnUnitActiveSec = "${toString check.healthIntervalSecs}s";
            AccuracySec = "1s";
          };
        }
      ) cfg.healthChecks;
    }
  ];
}
