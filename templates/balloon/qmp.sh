{% include "common/header.sh" %}
# Sets the size of the guest's memory balloon over QMP and waits for the guest to follow. QMP's
# `balloon` (qemu's and stratovirt's) takes the memory the guest keeps, in bytes.

{% include "common/balloon-options.sh" %}
target=$(((mem_mib - size_mib) * 1024 * 1024))

socket={{ socket }}
if [ ! -S "$socket" ]; then
  echo "microvm-balloon: no control socket at $socket; the VM is not running" >&2
  exit 1
fi

trap '' PIPE
coproc qmp { exec {{ tools.socat }} - UNIX-CONNECT:"$socket"; }
exec {to_qmp}>&"${qmp[1]}" {from_qmp}<&"${qmp[0]}"

# Sends one command and waits for its answer; events in between only update $actual.
actual=""
qmp() {
  local line
  printf '%s\n' "$1" >&"$to_qmp" || return 1
  while read -r -t 10 line <&"$from_qmp"; do
    if [[ $line =~ \"actual\":\ *([0-9]+) ]]; then
      actual=${BASH_REMATCH[1]}
    fi
    case $line in
      *'"return"'*) return 0 ;;
      *'"error"'*) echo "microvm-balloon:" {{ hypervisor }} "refused: $line" >&2; return 1 ;;
    esac
  done
  echo "microvm-balloon: no answer from" {{ hypervisor }} >&2
  return 1
}

if ! read -r -t 10 greeting <&"$from_qmp" || [[ $greeting != *QMP* ]]; then
  echo "microvm-balloon: no QMP greeting on $socket; the VM is not running" >&2
  exit 1
fi
qmp '{"execute":"qmp_capabilities"}'
qmp "{\"execute\":\"balloon\",\"arguments\":{\"value\":$target}}"

deadline=$((SECONDS + 10))
while :; do
  qmp '{"execute":"query-balloon"}'
  if [ "$actual" = "$target" ] || [ "$SECONDS" -ge "$deadline" ]; then
    break
  fi
  read -r -t 0.5 _ <&"$from_qmp" || true
done

echo "microvm-balloon: balloon $size_mib MiB; the guest has $((actual / 1024 / 1024)) of $mem_mib MiB"
if [ "$actual" != "$target" ]; then
  echo "microvm-balloon: the guest has not reached $((target / 1024 / 1024)) MiB yet (is virtio_balloon loaded?)" >&2
  exit 1
fi
