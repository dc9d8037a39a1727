{% include "common/header.sh" %}
# Removes this VM's tap interfaces; interfaces already gone are fine.
{% for tap in taps %}
if {{ tools.ip }} link show dev {{ tap.id }} >/dev/null 2>&1; then
  {{ tools.ip }} link delete dev {{ tap.id }}
fi
{%- endfor %}
