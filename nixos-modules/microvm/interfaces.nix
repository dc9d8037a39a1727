# Guest side of `microvm.interfaces`: the guest does not know the host-side `id`, and its own
# names depend on the hypervisor's bus, so each interface is configured by its MAC address.
# The generated networkd unit only sets defaults (DHCP); a unit of the user's that matches the
# same interface and sorts first (a name below "80-") takes precedence.
{ config, lib, ... }:

let
  cfg = config.microvm;
in
lib.mkIf (cfg.guest.enable && config.networking.useNetworkd) {
  systemd.network.networks = builtins.listToAttrs (
    map (interface: {
      name = "80-microvm-${interface.id}";
      value = {
        matchConfig.MACAddress = interface.mac;
        networkConfig.DHCP = lib.mkDefault "yes";
      };
    }) cfg.interfaces
  );
}
