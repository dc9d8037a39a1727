# One example microVM per hypervisor: `nixosConfigurations.<hypervisor>-example` in the flake,
# its runner `packages.<host system>.<hypervisor>-example`, booted by the flake checks and
# evaluated by the evaluation tests (checks/eval). Each entry is
#   { system; hostSystem; module; }
# system: the guest's; hostSystem: the machine that runs the runner; module: the NixOS module.
let
  hypervisors = import ../lib/hypervisors.nix;
  capabilities = builtins.fromJSON (builtins.readFile ../lib/capabilities.json);
  hasUserNetwork = hypervisor: builtins.elem hypervisor capabilities.features."interface.user".supported;

  example = hypervisor: {
    system = if hypervisor == "vfkit" then "aarch64-linux" else "x86_64-linux";
    hostSystem = if hypervisor == "vfkit" then "aarch64-darwin" else "x86_64-linux";
    module =
      { lib, ... }:
      {
        networking.hostName = "${hypervisor}-microvm";
        system.stateVersion = "26.05";
        users.users.root.password = "";
        services.getty.autologinUser = "root";

        microvm = {
          inherit hypervisor;
          # qemu shares the host's store over 9p, vfkit over its built-in virtiofs; the others
          # boot from a store disk.
          shares =
            lib.optional (hypervisor == "qemu") {
              proto = "9p";
              tag = "ro-store";
              source = "/nix/store";
              mountPoint = "/nix/.ro-store";
            }
            ++ lib.optional (hypervisor == "vfkit") {
              proto = "virtiofs";
              tag = "ro-store";
              source = "/nix/store";
              mountPoint = "/nix/.ro-store";
            };
          # The hypervisors with a user-mode network get one; the others would need a tap and
          # root on the host.
          interfaces = lib.optional (hasUserNetwork hypervisor) {
            type = "user";
            id = "usernet";
            mac = "02:00:00:01:01:01";
          };
          forwardPorts = lib.optional (hypervisor == "qemu") {
            from = "host";
            host.port = 2222;
            guest.port = 22;
          };
        };

        # ssh -p 2222 root@localhost reaches the qemu example.
        services.openssh = lib.mkIf (hypervisor == "qemu") {
          enable = true;
          settings.PermitRootLogin = "yes";
        };
      };
  };
in
builtins.listToAttrs (
  map (hypervisor: {
    name = hypervisor;
    value = example hypervisor;
  }) hypervisors
)
