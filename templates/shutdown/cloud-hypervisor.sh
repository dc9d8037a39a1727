{% include "common/header.sh" %}
# Presses the guest's power button through cloud-hypervisor's API (vm.power-button) and waits
# until the VMM has exited, which it does once the guest has powered off.

{% include "common/shutdown-options.sh" %}
socket={{ socket }}
{% include "common/api.sh" -%}
if [ ! -S "$socket" ] || ! api http://localhost/api/v1/vmm.ping >/dev/null 2>&1; then
  echo "microvm-shutdown: nothing answers on $socket; the VM is not running" >&2
  exit 0
fi
api -X PUT http://localhost/api/v1/vm.power-button
echo "microvm-shutdown: pressed the power button; waiting up to ${timeout}s for the guest" >&2

vm_running() { api http://localhost/api/v1/vmm.ping >/dev/null 2>&1; }
{% include "common/wait-until-gone.sh" %}
