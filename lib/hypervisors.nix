# The eight hypervisors, in the order that names the examples and their packages (as in
# microvm.nix). The capability table has an entry for each; the evaluation tests check that.
[
  "qemu"
  "cloud-hypervisor"
  "firecracker"
  "crosvm"
  "kvmtool"
  "stratovirt"
  "alioth"
  "vfkit"
]
