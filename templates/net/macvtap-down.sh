{% include "common/header.sh" %}
# Removes this VM's macvtap interfaces; interfaces already gone are fine.
{% for macvtap in macvtaps %}
if {{ tools.ip }} link show dev {{ macvtap.id }} >/dev/null 2>&1; then
  {{ tools.ip }} link delete dev {{ macvtap.id }}
fi
{%- endfor %}
