{% include "common/header.sh" %}
cd {{ state_dir }}/"$1"
{{ tools.rm }} -f booted
