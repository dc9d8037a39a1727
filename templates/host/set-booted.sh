{% include "common/header.sh" %}
# Records the installed version as the running one.
cd {{ state_dir }}/"$1"
{{ tools.ln }} -sfnT "$({{ tools.readlink }} current)" booted
