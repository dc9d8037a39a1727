# ssh over vsock: systemd's ssh generator opens sshd-vsock.socket (vsock port 22) when the guest
# has a vsock device; this turns sshd on. From the host: `ssh vsock/<cid>` (qemu, crosvm,
# kvmtool) or `ssh vsock-mux/<state dir>/notify.vsock` (cloud-hypervisor).
{ config, lib, ... }:

let
  cfg = config.microvm.vsock;
in
{
  options.microvm.vsock.ssh.enable = lib.mkOption {
    type = lib.types.bool;
    default = false;
    example = true;
    description = ''
      Whether to run an ssh server on vsock, reachable from the host without any network.
      Needs `microvm.vsock.cid`.
    '';
  };

  config = lib.mkIf cfg.ssh.enable {
    assertions = [
      {
        assertion = cfg.cid != null;
        message = "microvm.vsock.ssh.enable needs microvm.vsock.cid.";
      }
    ];
    services.openssh.enable = true;
  };
}
