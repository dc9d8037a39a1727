{% include "common/header.sh" %}
# Removes the ephemeral volume images of a VM that has stopped (the host unit runs this after
# the hypervisor exits), so nothing of one run is left for the next or on the host's disk.
{%- for image in ephemeral_images %}
{{ tools.rm }} -f -- {{ image }} {{ image ~ ".microvm-partial" }}
{%- endfor %}

