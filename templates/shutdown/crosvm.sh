{% include "common/header.sh" %}
# Presses the guest's ACPI power button (crosvm powerbtn) and waits until crosvm has exited.
# crosvm unlinks its control socket as it shuts down (the listener is dropped when its control
# loop returns), so the socket's disappearance is the sign that the VMM is gone.

{% include "common/shutdown-options.sh" %}
{% include "common/crosvm-socket.sh" -%}
if [ ! -S "$socket" ]; then
  echo "microvm-shutdown: no control socket at $socket; the VM is not running" >&2
  exit 0
fi
if ! {{ tools.crosvm }} powerbtn "$socket"; then
  if [ ! -S "$socket" ]; then
    echo "microvm-shutdown: the VM has powered off" >&2
    exit 0
  fi
  echo "microvm-shutdown: crosvm did not take the power button; if no crosvm is running, $socket is left over from a crash" >&2
  exit 1
fi
echo "microvm-shutdown: pressed the power button; waiting up to ${timeout}s for the guest" >&2

vm_running() { [ -S "$socket" ]; }
{% include "common/wait-until-gone.sh" %}
