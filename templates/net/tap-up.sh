{% include "common/header.sh" %}
# Creates this VM's tap interfaces, owned by the user that runs the hypervisor. A leftover
# interface of the same name is replaced so that its flags match.
{% for tap in taps %}
if {{ tools.ip }} link show dev {{ tap.id }} >/dev/null 2>&1; then
  {{ tools.ip }} link delete dev {{ tap.id }}
fi
{{ tools.ip }} tuntap add name {{ tap.id }} mode tap user {{ host_user }} vnet_hdr{% if tap.multi_queue %} multi_queue{% endif %}
{{ tools.ip }} link set dev {{ tap.id }} up
{%- endfor %}
