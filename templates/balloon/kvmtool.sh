{% include "common/header.sh" %}
# Sets the size of the guest's memory balloon. lkvm only inflates or deflates the balloon by a
# number of MiB, so this script keeps the size it last set in a state file (microvm-run removes
# it at start, when the balloon is empty) and sends lkvm the difference.

{% include "common/balloon-options.sh" %}
name={{ host_name }}
# The same file microvm-run removes at start.
state={{ balloon_state_file }}
current=0
if [ -f "$state" ]; then
  read -r current <"$state" || true
  case $current in '' | *[!0-9]*) current=0 ;; esac
  current=$((10#$current))
fi

# lkvm finds the VM's control socket under $HOME/.lkvm; microvm-run starts it with the working
# directory as HOME.
export HOME=$PWD
if [ "$size_mib" -gt "$current" ]; then
  change=(--inflate "$((size_mib - current))")
elif [ "$size_mib" -lt "$current" ]; then
  change=(--deflate "$((current - size_mib))")
else
  echo "microvm-balloon: the balloon is already $size_mib MiB"
  exit 0
fi
if ! {{ tools.lkvm }} balloon --name "$name" "${change[@]}"; then
  echo "microvm-balloon: lkvm could not reach $name (is the VM running in $PWD?)" >&2
  exit 1
fi
# lkvm has created .lkvm in $HOME (it does on every start).
printf '%s\n' "$size_mib" >"$state"
echo "microvm-balloon: balloon $size_mib MiB requested; the guest keeps $((mem_mib - size_mib)) of $mem_mib MiB"
