mem_mib={{ mem }}
usage() {
  echo "usage: microvm-balloon SIZE_MIB"
  echo "Inflates the balloon to SIZE_MIB, leaving the guest $mem_mib - SIZE_MIB MiB; 0 gives all"
  echo "memory back. Run it in the VM's working directory, like microvm-run."
}

if [ "$#" -ne 1 ]; then
  usage >&2
  exit 2
fi
case $1 in
  -h | --help) usage; exit 0 ;;
  '' | *[!0-9]*) echo "microvm-balloon: SIZE_MIB must be a whole number of MiB" >&2; exit 2 ;;
esac
size_mib=$((10#$1))
if [ "$size_mib" -ge "$mem_mib" ]; then
  echo "microvm-balloon: the balloon must stay below the guest's $mem_mib MiB" >&2
  exit 2
fi
