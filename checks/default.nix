# Flake checks, for `nix flake check` on a Linux host with KVM: each example VM boots from its
# runner inside the build sandbox (system feature "kvm") and stops, and each one whose
# hypervisor can shut the guest down is shut down by its `microvm-shutdown`. The generator's own
# tiers (unit, generated text, TCG boots, evaluation) run with checks/test.sh, without Nix.
{
  self,
  system,
  pkgs,
}:

let
  inherit (pkgs) lib;
  examples = import ../examples;

  # How the guest stops itself so that the hypervisor exits: qemu (-no-reboot), firecracker,
  # crosvm and kvmtool exit when the guest reboots; cloud-hypervisor and alioth when it powers
  # off. stratovirt cannot stop the guest yet and vfkit runs on macOS only, so neither is booted.
  stopCommand = {
    qemu = "reboot";
    firecracker = "reboot";
    crosvm = "reboot";
    kvmtool = "reboot";
    cloud-hypervisor = "poweroff";
    alioth = "poweroff";
  };
  # The hypervisors whose runner has bin/microvm-shutdown.
  shutdownable = [
    "qemu"
    "cloud-hypervisor"
    "firecracker"
    "crosvm"
  ];

  marker = "MICROVM-CHECK-BOOTED";

  # The example, extended by a service that reports on the console once the system is up and,
  # in the boot check, stops the guest.
  runner =
    hypervisor: stopsItself:
    (self.nixosConfigurations."${hypervisor}-example".extendModules {
      modules = [
        {
          systemd.services.microvm-check = {
            wantedBy = [ "multi-user.target" ];
            serviceConfig = {
              Type = "oneshot";
              StandardOutput = "journal+console";
            };
            script = ''
              echo "${marker} $(uname -sm)"
            ''
            + lib.optionalString stopsItself ''
              systemctl ${stopCommand.${hypervisor}}
            '';
          };
        }
      ];
    }).config.microvm.declaredRunner;

  check =
    name: script:
    pkgs.runCommand name {
      requiredSystemFeatures = [ "kvm" ];
      nativeBuildInputs = [
        pkgs.coreutils
        pkgs.gnugrep
      ];
    } script;

  bootCheck =
    hypervisor:
    let
      vm = runner hypervisor true;
    in
    check "microvm-${hypervisor}-boots-and-stops" ''
      status=0
      timeout 600 ${lib.getExe vm} < /dev/null > console.log 2>&1 || status=$?
      if ! grep "${marker}" console.log; then
        tail -n 100 console.log
        echo "the guest did not report that it booted" >&2
        exit 1
      fi
      if [ "$status" = 124 ]; then
        tail -n 100 console.log
        echo "the VM did not stop within 600 s" >&2
        exit 1
      fi
      touch "$out"
    '';

  shutdownCheck =
    hypervisor:
    let
      vm = runner hypervisor false;
    in
    check "microvm-${hypervisor}-shuts-down" ''
      if [ ! -x ${vm}/bin/microvm-shutdown ]; then
        echo "the runner has no bin/microvm-shutdown" >&2
        exit 1
      fi
      ${lib.getExe vm} < /dev/null > console.log 2>&1 &
      pid=$!
      for _ in $(seq 600); do
        if grep -q "${marker}" console.log || ! kill -0 "$pid" 2> /dev/null; then
          break
        fi
        sleep 1
      done
      if ! grep "${marker}" console.log; then
        tail -n 100 console.log
        echo "the guest did not report that it booted" >&2
        exit 1
      fi
      timeout 120 ${vm}/bin/microvm-shutdown
      if ! timeout 120 tail --pid="$pid" -f /dev/null; then
        tail -n 100 console.log
        echo "the VM was still running 120 s after microvm-shutdown" >&2
        exit 1
      fi
      wait "$pid"
      touch "$out"
    '';

  booted = lib.filterAttrs (
    hypervisor: example: example.hostSystem == system && stopCommand ? ${hypervisor}
  ) examples;
in
lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux (
  lib.mapAttrs' (hypervisor: _: lib.nameValuePair "${hypervisor}-boots" (bootCheck hypervisor)) booted
  // lib.mapAttrs' (hypervisor: _: lib.nameValuePair "${hypervisor}-shutdown" (shutdownCheck hypervisor)) (
    lib.filterAttrs (hypervisor: _: builtins.elem hypervisor shutdownable) booted
  )
)
// {
  microvm-codegen = self.packages.${system}.microvm-codegen;
}
