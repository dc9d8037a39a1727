{% include "common/header.sh" %}
# Serves every virtiofs share of this VM with its own virtiofsd. Readiness is reported only once
# every virtiofsd is running and has made its socket; one that exits before that (a virtiofsd
# refusing its flags) ends virtiofsd-run with an error instead. After that, a virtiofsd that exits
# (each one ends when the VM disconnects) is started again.

pids=()
# The pause before a restart runs in the background: bash runs a trap only once a foreground
# command ends, but interrupts `wait` at once, so a stop never waits for the pause.
pause=
stop() {
  trap - TERM INT EXIT
  kill -TERM ${pause:+"$pause"} "${pids[@]}" 2>/dev/null || true
  wait || true
}
trap 'stop; exit 0' TERM INT
trap stop EXIT
{%- if virtiofsd_threads_from_nproc %}

threads=$({{ tools.nproc }})
{%- endif %}

sockets=({% for share in virtiofs %}{% if not loop.first %} {% endif %}{{ share.socket }}{% endfor %})

# Starts virtiofsd number $1 on a fresh socket (one left by an earlier run would look ready).
start() {
  {{ tools.rm }} -f -- "${sockets[$1]}"
  case $1 in
{%- for share in virtiofs %}
  {{ loop.index0 }}) {{ share.argv | argv }} & ;;
{%- endfor %}
  esac
  pids[$1]=$!
}

# Whether virtiofsd number $1 still runs (bash collects a child as soon as it exits).
running() {
  kill -0 "${pids[$1]}" 2>/dev/null
}

for i in "${!sockets[@]}"; do
  start "$i"
done

waited=0
while :; do
  up=0
  for i in "${!sockets[@]}"; do
    if [ -S "${sockets[i]}" ]; then
      up=$((up + 1))
    fi
    # Checked after the socket: a socket counts only when its virtiofsd still runs.
    if ! running "$i"; then
      status=0
      wait "${pids[i]}" || status=$?
      echo "virtiofsd-run: virtiofsd for ${sockets[i]} exited with status $status while starting; not ready" >&2
      exit 1
    fi
  done
  if [ "$up" -eq "${#sockets[@]}" ]; then
    break
  fi
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

# From here on, a virtiofsd that exits is started again. Every one is checked before waiting:
# bash's `wait -n` misses a child that exited while a foreground command (sleep, rm) ran.
while :; do
  for i in "${!sockets[@]}"; do
    if ! running "$i"; then
      status=0
      wait "${pids[i]}" || status=$?
      echo "virtiofsd-run: virtiofsd for ${sockets[i]} exited with status $status; restarting" >&2
      {{ tools.sleep }} 1 &
      pause=$!
      wait "$pause" || true
      pause=
      start "$i"
      continue 2
    fi
  done
  wait -n || true
done
