{% include "common/header.sh" %}
# microvm.binScripts, as written in the VM's configuration:
{{ text | safe }}
