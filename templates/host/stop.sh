{% include "common/header.sh" %}
# ExecStop of microvm@NAME: the graceful shutdown of the running version, when it has one.
name=$1
cd {{ state_dir }}/"$name"
if [ -x booted/bin/microvm-shutdown ]; then
  exec booted/bin/microvm-shutdown --timeout {{ shutdown_timeout }}
fi
echo "microvm@$name: this hypervisor has no graceful shutdown; systemd stops the process" >&2
