{% include "common/header.sh" %}
# Serves every virtiofs share of this VM with its own virtiofsd, restarts a virtiofsd that exits
# (each one ends when the VM disconnects), and reports readiness once every socket exists.

children=()
stop() {
  trap - TERM INT EXIT
  if [ "${#children[@]}" -gt 0 ]; then
    kill -TERM "${children[@]}" 2>/dev/null || true
    wait || true
  fi
}
trap 'stop; exit 0' TERM INT
trap stop EXIT
{%- if virtiofsd_threads_from_nproc %}

threads=$({{ tools.nproc }})
{%- endif %}

# Runs one virtiofsd again and again until told to stop.
supervise() {
  local socket=$1 child=""
  shift
  trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" || true; fi; exit 0' TERM INT
  while :; do
    {{ tools.rm }} -f -- "$socket"
    "$@" &
    child=$!
    status=0
    wait "$child" || status=$?
    child=""
    echo "virtiofsd-run: virtiofsd for $socket exited with status $status; restarting" >&2
    {{ tools.sleep }} 1
  done
}
{% for share in virtiofs %}
supervise {{ share.socket }} {{ share.argv | argv }} &
children+=("$!")
{%- endfor %}

all_sockets_exist() {
  true{% for share in virtiofs %} && [ -S {{ share.socket }} ]{% endfor %}
}

waited=0
until all_sockets_exist; do
  if [ "$waited" -ge 300 ]; then
    echo "virtiofsd-run: the virtiofsd sockets did not appear within 30 s" >&2
    exit 1
  fi
  {{ tools.sleep }} 0.1
  waited=$((waited + 1))
done
echo "virtiofsd-run: ready, serving {{ virtiofs | length }} share(s)" >&2
{%- if tools.systemd_notify %}
if [ -n "${NOTIFY_SOCKET:-}" ]; then
  {{ tools.systemd_notify }} --ready
fi
{%- endif %}

wait
