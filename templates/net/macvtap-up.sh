{% include "common/header.sh" %}
# Creates this VM's macvtap interfaces and hands their character devices to the VM's user.
{% for macvtap in macvtaps %}
if {{ tools.ip }} link show dev {{ macvtap.id }} >/dev/null 2>&1; then
  {{ tools.ip }} link delete dev {{ macvtap.id }}
fi
{{ tools.ip }} link add link {{ macvtap.link }} name {{ macvtap.id }} address {{ macvtap.mac }} type macvtap mode {{ macvtap.mode }}
{{ tools.ip }} link set dev {{ macvtap.id }} allmulticast on
if [ -w /proc/sys/net/ipv6/conf/{{ macvtap.id }}/disable_ipv6 ]; then
  echo 1 >/proc/sys/net/ipv6/conf/{{ macvtap.id }}/disable_ipv6
fi
{{ tools.ip }} link set dev {{ macvtap.id }} up
ifindex=$(< /sys/class/net/{{ macvtap.id }}/ifindex)
{{ tools.chown }} {{ host_user }}:{{ host_group }} "/dev/tap$ifindex"
{%- endfor %}
