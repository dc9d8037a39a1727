{% include "common/header.sh" %}
# Sets the size of the guest's memory balloon through crosvm's control socket (crosvm balloon
# takes the balloon size in bytes) and reports the size the guest reached (crosvm balloon_stats).

{% include "common/balloon-options.sh" %}
target=$((size_mib * 1024 * 1024))

{% include "common/crosvm-socket.sh" -%}
if [ ! -S "$socket" ]; then
  echo "microvm-balloon: no control socket at $socket; the VM is not running" >&2
  exit 1
fi
if ! {{ tools.crosvm }} balloon "$target" "$socket"; then
  echo "microvm-balloon: crosvm refused the balloon size (is virtio_balloon loaded in the guest?)" >&2
  exit 1
fi

# crosvm balloon_stats prints {"BalloonStats": {"stats": {…}, "balloon_actual": BYTES}}.
actual=""
deadline=$((SECONDS + 10))
while :; do
  if stats=$({{ tools.crosvm }} balloon_stats "$socket") &&
    [[ $stats =~ \"balloon_actual\":\ *([0-9]+) ]]; then
    actual=${BASH_REMATCH[1]}
  fi
  if [ "$actual" = "$target" ] || [ "$SECONDS" -ge "$deadline" ]; then
    break
  fi
  {{ tools.sleep }} 0.5
done

if [ -z "$actual" ]; then
  echo "microvm-balloon: balloon $size_mib MiB requested; crosvm balloon_stats did not report the size" >&2
  exit 1
fi
echo "microvm-balloon: balloon $((actual / 1024 / 1024)) MiB; the guest has $((mem_mib - actual / 1024 / 1024)) of $mem_mib MiB"
if [ "$actual" != "$target" ]; then
  echo "microvm-balloon: the balloon has not reached $size_mib MiB yet (is virtio_balloon loaded?)" >&2
  exit 1
fi
