{% include "common/header.sh" %}
# Installs a declared VM into its state directory. Volumes and other state there
# are left as they are.
dir={{ state_dir }}/{{ name }}
{{ tools.mkdir }} -p "$dir"
cd "$dir"
{{ tools.ln }} -sfnT {{ runner }} current
{%- if toplevel %}
# Marks the VM as fully declarative: `microvm update` leaves it to the host configuration.
{{ tools.ln }} -sfnT {{ toplevel }} toplevel
{%- else %}
{{ tools.rm }} -f toplevel
{%- endif %}
{%- if flake %}
printf '%s\n' {{ flake }} >flake
{%- endif %}
{{ tools.chown }} -h {{ user }}:{{ group }} . current {% if flake %}flake {% endif %}
