# Calls the VMM's HTTP API on $socket; the arguments are curl's (method, data, URL).
api() {
  {{ tools.curl }} --silent --show-error --fail --max-time 5 --unix-socket "$socket" "$@"
}
