# Throwaway CI runners (`microvm.ciRunners.<pool>`): each pool is `count` declared VMs whose
# guest runs nixpkgs' own runner service for exactly one job, then powers off; the host's
# `microvm@` unit (Restart=always) starts it again, and every volume being ephemeral, the new
# start is a clean machine. The registration token is read by systemd at each start
# (LoadCredential= from `tokenFile`) and reaches the guest as a systemd credential where the
# hypervisor passes them, else as a small read-only disk the runner makes at start and
# `microvm-discard` deletes at stop: it is never in the store, the guest's system or the runner.
{
  config,
  lib,
  ...
}:

let
  inherit (lib) mkOption types;
  microvmLib = import ../../lib { inherit lib; };
  capabilities = builtins.fromJSON (builtins.readFile ../../lib/capabilities.json);

  pools = config.microvm.ciRunners;

  # The name of the credential the host unit loads and the guest imports, and of the guest's
  # copy of the token, readable by root alone.
  credential = "microvm-ci-token";
  guestTokenDir = "/run/microvm-ci";
  # Where the ephemeral scratch volume (the runners' working directories) is mounted.
  scratchDir = "/var/lib/microvm-ci";
  tokenImage = "ci-token.img";

  passesCredentials = hypervisor: builtins.elem hypervisor capabilities.features.credentialFiles.supported;
  hasSerials = hypervisor: builtins.elem hypervisor capabilities.features."volume.serial".supported;

  hash = name: builtins.hashString "sha256" "microvm-ci:${name}";
  # A locally administered unicast MAC from the VM's name.
  macOf =
    name:
    let
      byte = i: builtins.substring (2 * i) 2 (hash name);
    in
    "02:${byte 0}:${byte 1}:${byte 2}:${byte 3}:${byte 4}";
  # Tap names have 15 bytes: "ci", six hex digits of the pool's name, "-", the index.
  tapOf = pool: index: "ci${builtins.substring 0 6 (hash pool)}-${toString index}";

  instances = lib.concatLists (
    lib.mapAttrsToList (
      pool: p:
      lib.genList (
        i:
        let
          index = i + 1;
        in
        {
          inherit pool p index;
          name = "${pool}-${toString index}";
          tap = tapOf pool index;
          mac = macOf "${pool}-${toString index}";
          cid = if p.vsockCidBase == null then null else p.vsockCidBase + i;
        }
      ) p.count
    ) pools
  );

  # The token's path inside the host unit: systemd copies `tokenFile` there at every start,
  # readable by the unit's user (the hypervisor's), and removes it at stop.
  hostCredentialPath = name: "/run/credentials/microvm@${name}.service/${credential}";

  guestModule =
    inst:
    {
      config,
      lib,
      pkgs,
      ...
    }:
    let
      inherit (inst) p name;
      viaCredential = passesCredentials p.hypervisor;
      tokenDevice =
        if hasSerials p.hypervisor then
          "/dev/disk/by-id/virtio-${credential}"
        else
          "/dev/vd"
          + (lib.findFirst (v: v.image == tokenImage) (throw "no token volume") (
            microvmLib.withDriveLetters config.microvm
          )).letter;
      # The guest's copy of the token, and for GitLab the environment file its registration reads.
      tokenFile = "${guestTokenDir}/token";
      gitlabEnvFile = "${guestTokenDir}/gitlab.env";
      gitlabRunner = lib.getExe' config.services.gitlab-runner.package "gitlab-runner";
      runnerUnit = if p.kind == "github" then "github-runner-${name}.service" else "gitlab-runner.service";
    in
    lib.mkMerge [
    {
      networking.hostName = lib.mkDefault name;
      microvm = {
        inherit (p) hypervisor vcpu mem;
        ephemeral = true;
        # The store comes from the store disk; no host path is shared with untrusted code.
        storeOnDisk = true;
        shares = lib.mkForce [ ];
        interfaces = [
          {
            type = "tap";
            id = inst.tap;
            inherit (inst) mac;
          }
        ];
        vsock.cid = inst.cid;
        volumes = [
          {
            image = "scratch.img";
            label = "ci-scratch";
            mountPoint = scratchDir;
            size = p.scratchSize;
          }
        ]
        ++ lib.optional (!viaCredential) {
          image = tokenImage;
          serial = if hasSerials p.hypervisor then credential else null;
          mountPoint = null;
          readOnly = true;
          autoCreate = false;
          contentsFile = hostCredentialPath name;
        };
        credentialFiles = lib.optionalAttrs viaCredential {
          ${credential} = hostCredentialPath name;
        };
      };

      # Copies the token to a root-only file before the runner starts: from the system
      # credential the hypervisor passed, or from the token disk (its bytes, sector padding
      # removed).
      systemd.services.microvm-ci-token = {
        wantedBy = [ runnerUnit ];
        requiredBy = [ runnerUnit ];
        unitConfig.Before = runnerUnit;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          UMask = "0077";
        }
        // lib.optionalAttrs viaCredential { ImportCredential = credential; };
        script = ''
          mkdir -p -m 0700 ${guestTokenDir}
          ${
            if viaCredential then
              ''cat "$CREDENTIALS_DIRECTORY/${credential}" > ${tokenFile}.new''
            else
              "tr -d '\\000' < ${tokenDevice} > ${tokenFile}.new"
          }
          mv ${tokenFile}.new ${tokenFile}
        ''
        + lib.optionalString (p.kind == "gitlab") ''
          { echo CI_SERVER_URL=${lib.escapeShellArg p.url}; printf 'CI_SERVER_TOKEN=%s\n' "$(cat ${tokenFile})"; } > ${gitlabEnvFile}
        '';
      };
      # The builds' working directories live on the ephemeral scratch volume.
      systemd.tmpfiles.rules = [ "d ${scratchDir}/work 0777 root root -" ];

      # When the one job is over (or registration failed), the machine goes: the host starts a
      # new one from a clean slate.
      systemd.services.${lib.removeSuffix ".service" runnerUnit} = {
        serviceConfig.Restart = lib.mkForce "no";
        unitConfig = {
          SuccessAction = "poweroff";
          FailureAction = "poweroff";
        };
      };
    }
    (lib.mkIf (p.kind == "github") {
      services.github-runners = {
        ${name} = {
          enable = true;
          inherit (p) url;
          inherit tokenFile;
          # One job, then the runner deregisters and exits.
          ephemeral = true;
          replace = true;
          extraLabels = p.labels;
          workDir = "${scratchDir}/work";
        };
      };
    })
    (lib.mkIf (p.kind == "gitlab") {
      services.gitlab-runner = {
        enable = true;
        services.${name} = {
          authenticationTokenConfigFile = gitlabEnvFile;
          executor = "shell";
          limit = 1;
          buildsDir = "${scratchDir}/work";
        };
      };
      # gitlab-runner `run` takes jobs forever: `run-single` takes one and exits. It reads the
      # instance and the runner's token from CI_SERVER_URL and CI_SERVER_TOKEN, which the
      # service (a dynamic user) gets as a credential of the root-only file.
      systemd.services.gitlab-runner.serviceConfig = {
        LoadCredential = [ "gitlab-env:${gitlabEnvFile}" ];
        ExecStart = lib.mkForce (
          pkgs.writeShellScript "gitlab-runner-one-job" ''
            set -a
            . "$CREDENTIALS_DIRECTORY/gitlab-env"
            set +a
            exec ${gitlabRunner} run-single --executor shell --builds-dir ${scratchDir}/work --max-builds 1
          ''
        );
      };
    })
    ];
in
{
  options.microvm.ciRunners = mkOption {
    default = { };
    description = ''
      Pools of throwaway CI runners: `count` VMs each, named `<pool>-<n>`, whose guest runs
      one job with nixpkgs' runner service and powers off; the host starts it again from
      nothing (every volume is ephemeral).
    '';
    type = types.attrsOf (
      types.submodule {
        options = {
          kind = mkOption {
            type = types.enum [
              "github"
              "gitlab"
            ];
            description = ''
              `github`: `services.github-runners.<name>` with `ephemeral = true`; `gitlab`:
              `services.gitlab-runner` (registration by its module) whose unit takes one build
              with `gitlab-runner run-single --max-builds 1`.
            '';
          };
          url = mkOption {
            type = types.str;
            example = "https://github.com/acme/app";
            description = "The repository or organisation (GitHub) or instance (GitLab) the runners register with.";
          };
          tokenFile = mkOption {
            type = types.str;
            example = "/run/secrets/ci-runner-token";
            description = ''
              Host file with the token, read by systemd at every start of a runner VM (a
              string, so it is never copied into the Nix store; a path in the store is an
              error). GitHub: a personal access token (an ephemeral runner registers anew at
              each start); GitLab: a runner authentication token.
            '';
          };
          count = mkOption {
            type = types.ints.positive;
            default = 1;
            description = "How many runner VMs the pool has.";
          };
          labels = mkOption {
            type = types.listOf types.str;
            default = [ ];
            description = "Extra labels of the runners (GitHub `extraLabels`).";
          };
          hypervisor = mkOption {
            type = types.enum microvmLib.hypervisors;
            default = "qemu";
            description = ''
              The hypervisor of the pool's VMs. qemu passes the token as a systemd credential;
              the others get it on a small read-only disk made at start.
            '';
          };
          vcpu = mkOption {
            type = types.ints.positive;
            default = 2;
            description = "vCPUs of each runner VM.";
          };
          mem = mkOption {
            type = types.ints.positive;
            default = 2048;
            description = "Memory of each runner VM in MiB.";
          };
          scratchSize = mkOption {
            type = types.ints.positive;
            default = 8192;
            description = ''
              Size in MiB of the ephemeral volume holding the builds' working directories,
              made empty at every start and deleted at stop.
            '';
          };
          vsockCidBase = mkOption {
            type = types.nullOr (types.ints.between 3 4294967293);
            default = null;
            description = ''
              No vsock unless asked: with a number, VM `<n>` of the pool gets the vsock CID
              `vsockCidBase + n - 1`.
            '';
          };
          extraModules = mkOption {
            type = types.listOf types.deferredModule;
            default = [ ];
            description = "More NixOS modules for every runner guest (toolchains, Nix settings).";
          };
        };
      }
    );
  };

  config = lib.mkIf (pools != { }) {
    assertions =
      lib.mapAttrsToList (pool: p: {
        assertion = !lib.hasPrefix builtins.storeDir p.tokenFile;
        message = "microvm.ciRunners.${pool}.tokenFile is in the Nix store (${p.tokenFile}), where every user can read it; give a path outside it, such as /run/secrets/ci-token.";
      }) pools
      ++ lib.mapAttrsToList (pool: p: {
        assertion = lib.hasPrefix "/" p.tokenFile;
        message = "microvm.ciRunners.${pool}.tokenFile must be an absolute path (it is \"${p.tokenFile}\").";
      }) pools
      ++ [
        {
          assertion =
            let
              cids = lib.filter (c: c != null) (map (i: i.cid) instances);
            in
            lib.length cids == lib.length (lib.unique cids);
          message = "microvm.ciRunners: the pools' vsock CIDs overlap; move a pool's vsockCidBase.";
        }
        {
          assertion = lib.length (lib.unique (map (i: i.tap) instances)) == lib.length instances;
          message = "microvm.ciRunners: two pools' names give the same tap prefix; rename one.";
        }
      ];

    microvm.vms = lib.listToAttrs (
      map (inst: {
        inherit (inst) name;
        value = {
          config = guestModule inst;
          inherit (inst.p) extraModules;
          autostart = true;
          restartIfChanged = true;
        };
      }) instances
    );

    # The token reaches the unit at each start; the unit's own files are a template's, so this
    # is a drop-in of the instance.
    systemd.services = lib.listToAttrs (
      map (inst: {
        name = "microvm@${inst.name}";
        value = {
          overrideStrategy = "asDropin";
          serviceConfig.LoadCredential = [ "${credential}:${inst.p.tokenFile}" ];
        };
      }) instances
    );
  };
}
