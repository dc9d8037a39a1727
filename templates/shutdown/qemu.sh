{% include "common/header.sh" %}
# Presses the guest's ACPI power button over QMP (system_powerdown) and waits until qemu exits.

{% include "common/shutdown-options.sh" %}
socket={{ socket }}
if [ ! -S "$socket" ]; then
  echo "microvm-shutdown: no control socket at $socket; the VM is not running" >&2
  exit 0
fi

trap '' PIPE
coproc qmp { exec {{ tools.socat }} - UNIX-CONNECT:"$socket"; }
exec {to_qmp}>&"${qmp[1]}" {from_qmp}<&"${qmp[0]}"

if ! read -r -t 10 greeting <&"$from_qmp" || [[ $greeting != *QMP* ]]; then
  echo "microvm-shutdown: no QMP greeting on $socket; the VM is not running" >&2
  exit 0
fi
printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"system_powerdown"}' >&"$to_qmp" || true
echo "microvm-shutdown: pressed the power button; waiting up to ${timeout}s for the guest" >&2

deadline=$((SECONDS + timeout))
while :; do
  status=0
  read -r -t 1 _ <&"$from_qmp" || status=$?
  if [ "$status" -eq 0 ]; then
    continue
  fi
  if [ "$status" -le 128 ]; then
    echo "microvm-shutdown: the VM has powered off" >&2
    exit 0
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "microvm-shutdown: the guest is still running after ${timeout}s" >&2
    exit 1
  fi
done
