{% include "common/header.sh" %}
# Sets the size of the guest's memory balloon through cloud-hypervisor's API (vm.resize).

{% include "common/balloon-options.sh" %}
socket={{ socket }}
if [ ! -S "$socket" ]; then
  echo "microvm-balloon: no API socket at $socket; the VM is not running" >&2
  exit 1
fi
{% include "common/api.sh" -%}
api --max-time 10 -X PUT -H 'Content-Type: application/json' \
  -d "{\"desired_balloon\": $((size_mib * 1024 * 1024))}" \
  http://localhost/api/v1/vm.resize
echo "microvm-balloon: balloon $size_mib MiB requested; the guest keeps $((mem_mib - size_mib)) of $mem_mib MiB"
