# `mkGuest`: a microVM described by what it runs, in mvm's words (`name`, `packages`, `services`,
# `healthChecks`), for users who come from mvm. It is an ordinary NixOS guest: the arguments
# become `microvm.*` options and `modules` holds any other NixOS setting. The result is the
# runner package, so `packages.<system>.default = mkGuest { … }` and `nix run .` boot it; the
# NixOS configuration is its `nixosConfiguration` (also in `passthru`).
#
#   nixosSystem    nixpkgs' lib.nixosSystem (the flake passes it; tests pass a stand-in)
#   microvmModule  the guest module (nixosModules.microvm)
{ lib }:

{ nixosSystem, microvmModule }:

{
  name,
  system,
  packages ? [ ],
  services ? { },
  healthChecks ? { },
  hypervisor ? "qemu",
  vcpu ? 1,
  mem ? 512,
  volumes ? [ ],
  forwardPorts ? [ ],
  interfaces ? [ ],
  # The guest's vsock cid: readiness and health reach the host over vsock. Give each VM that
  # runs at the same time on one host a cid of its own.
  vsockCid ? 3,
  modules ? [ ],
}:

let
  nixos = nixosSystem {
    inherit system;
    modules = [
      microvmModule
      {
        networking.hostName = name;
        system.stateVersion = lib.mkDefault lib.trivial.release;
        environment.systemPackages = packages;
        microvm = {
          inherit
            hypervisor
            vcpu
            mem
            volumes
            forwardPorts
            services
            healthChecks
            ;
          vsock.cid = vsockCid;
          # Forwarded ports need qemu's user network; mvm users expect them to just work.
          interfaces =
            if interfaces == [ ] && forwardPorts != [ ] then
              [
                {
                  type = "user";
                  id = "usernet";
                  mac = "02:00:00:00:00:01";
                }
              ]
            else
              interfaces;
        };
      }
    ]
    ++ modules;
  };
  runner = nixos.config.microvm.declaredRunner;
in
runner
// {
  nixosConfiguration = nixos;
  passthru = (runner.passthru or { }) // {
    nixosConfiguration = nixos;
  };
}
