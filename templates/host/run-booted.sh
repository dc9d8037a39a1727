{% include "common/header.sh" %}
# Runs a script of the version that ran (booted), or of the installed one when no booted version
# is recorded, so teardown matches what was set up.
name=$1 script=$2
cd {{ state_dir }}/"$name"
for version in booted current; do
  if [ -x "$version/bin/$script" ]; then
    exec "$version/bin/$script"
  fi
done
echo "microvm: $name has no $script; nothing to undo" >&2
