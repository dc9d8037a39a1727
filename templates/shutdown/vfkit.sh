{% include "common/header.sh" %}
# Asks vfkit for a graceful stop through its REST API (POST /vm/state {"state":"Stop"}: the
# guest sees a power button; "HardStop" would pull the plug) and waits until vfkit has exited,
# which it does once the guest has powered off.

{% include "common/shutdown-options.sh" %}
socket={{ socket }}
{% include "common/api.sh" -%}
if [ ! -S "$socket" ] || ! api http://localhost/vm/state >/dev/null 2>&1; then
  echo "microvm-shutdown: nothing answers on $socket; the VM is not running" >&2
  exit 0
fi
if ! api -X POST -H 'Content-Type: application/json' -d '{"state":"Stop"}' http://localhost/vm/state; then
  echo "microvm-shutdown: vfkit refused the stop request" >&2
  exit 1
fi
echo "microvm-shutdown: asked the guest to stop; waiting up to ${timeout}s for it" >&2

vm_running() { api http://localhost/vm/state >/dev/null 2>&1; }
{% include "common/wait-until-gone.sh" %}
