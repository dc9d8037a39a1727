# The host's units always pass --timeout (microvm.host.shutdownTimeout); this is for running
# it by hand.
default_timeout=60
usage() {
  echo "usage: microvm-shutdown [--timeout SECONDS]"
  echo "Asks the guest to power off and waits for it (default: $default_timeout s). Exits 0 once"
  echo "the VM is gone (or was not running), 1 if it is still running after the timeout."
  echo "Run it in the VM's working directory, like microvm-run."
}

timeout=$default_timeout
while [ "$#" -gt 0 ]; do
  case $1 in
    --timeout)
      if [ "$#" -lt 2 ]; then usage >&2; exit 2; fi
      timeout=$2
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "microvm-shutdown: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case $timeout in '' | *[!0-9]*) echo "microvm-shutdown: --timeout takes whole seconds" >&2; exit 2 ;; esac
