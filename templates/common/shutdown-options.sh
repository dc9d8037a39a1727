usage() {
  echo "usage: microvm-shutdown [--timeout SECONDS]"
  echo "Asks the guest to power off and waits for it (default: 60 s). Exits 0 once the VM is"
  echo "gone (or was not running), 1 if it is still running after the timeout."
  echo "Run it in the VM's working directory, like microvm-run."
}

timeout=60
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
