# Waits until vm_running (defined by the including script) says the VMM has exited, for at most
# $timeout seconds.
deadline=$((SECONDS + timeout))
while vm_running; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "microvm-shutdown: the guest is still running after ${timeout}s" >&2
    exit 1
  fi
  {{ tools.sleep }} 0.5
done
echo "microvm-shutdown: the VM has powered off" >&2
