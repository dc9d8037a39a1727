{% include "common/header.sh" %}
# Sends Ctrl-Alt-Del to the guest through firecracker's API (PUT /actions SendCtrlAltDel; the
# guest gets it from firecracker's i8042 keyboard controller) and waits until firecracker has
# exited, which it does when the guest resets at the end of its shutdown.

{% include "common/shutdown-options.sh" %}
socket={{ socket }}
{% include "common/api.sh" -%}
if [ ! -S "$socket" ] || ! api http://localhost/ >/dev/null 2>&1; then
  echo "microvm-shutdown: nothing answers on $socket; the VM is not running" >&2
  exit 0
fi
api -X PUT -H 'Content-Type: application/json' \
  -d '{"action_type": "SendCtrlAltDel"}' http://localhost/actions
echo "microvm-shutdown: sent Ctrl-Alt-Del; waiting up to ${timeout}s for the guest" >&2

vm_running() { api http://localhost/ >/dev/null 2>&1; }
{% include "common/wait-until-gone.sh" %}
