{% include "common/header.sh" %}
# Sets the size of the guest's memory balloon through firecracker's API (PATCH /balloon, in MiB)
# and waits until the guest has given that much memory to it (GET /balloon/statistics).

{% include "common/balloon-options.sh" %}
socket={{ socket }}
if [ ! -S "$socket" ]; then
  echo "microvm-balloon: no API socket at $socket; the VM is not running" >&2
  exit 1
fi
{% include "common/api.sh" -%}
api -X PATCH -H 'Content-Type: application/json' \
  -d "{\"amount_mib\": $size_mib}" http://localhost/balloon

actual=""
deadline=$((SECONDS + 10))
while :; do
  statistics=$(api http://localhost/balloon/statistics) || statistics=""
  if [[ $statistics =~ \"actual_mib\":\ *([0-9]+) ]]; then
    actual=${BASH_REMATCH[1]}
  fi
  if [ "$actual" = "$size_mib" ] || [ "$SECONDS" -ge "$deadline" ]; then
    break
  fi
  {{ tools.sleep }} 0.5
done

if [ "$actual" != "$size_mib" ]; then
  echo "microvm-balloon: the balloon holds ${actual:-an unknown number of} MiB, not $size_mib, after 10 s (is virtio_balloon loaded in the guest?)" >&2
  exit 1
fi
echo "microvm-balloon: balloon $size_mib MiB; the guest keeps $((mem_mib - size_mib)) of $mem_mib MiB"
