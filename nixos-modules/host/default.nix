# The host module (`nixosModules.host`): declarative VMs (`microvm.vms`), the runners' systemd
# units and the `microvm` command. A placeholder until its issue lands; the guest module does
# not depend on it.
_: { }
