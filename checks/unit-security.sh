#!/usr/bin/env bash
# Rates the sandbox of the generated microvm@ unit with `systemd-analyze security --offline`
# and fails when its exposure is above the limit (default 4.0; 0 is best, 10 worst).
#
# Usage: checks/unit-security.sh [LIMIT]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
limit=${1:-4.0}

(cd "$repo" && cargo build --quiet --bin microvm-codegen)
codegen=${CARGO_TARGET_DIR:-$repo/target}/debug/microvm-codegen

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/host.json" <<JSON
{
  "specVersion": 1,
  "stateDir": "$work/state",
  "user": "microvm",
  "group": "kvm",
  "startupTimeout": 150,
  "shutdownTimeout": 60,
  "vms": { "vm1": { "runner": "$work/runner", "restartIfChanged": true } },
  "tools": { "bash": "/bin/bash", "ln": "/bin/ln", "rm": "/bin/rm", "mkdir": "/bin/mkdir",
             "chown": "/bin/chown", "readlink": "/bin/readlink", "microvm": "/bin/true" }
}
JSON
"$codegen" host --spec "$work/host.json" --out "$work/host" 2>/dev/null
units=$work/host/lib/systemd/system
cp "$units/microvm@.service" "$work/microvm@vm1.service"

report=$(systemd-analyze security --offline=true --no-pager "$work/microvm@vm1.service" 2>&1)
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")
if [[ -z $exposure ]]; then
	echo "unit-security: could not read the exposure from systemd-analyze:" >&2
	echo "$report" >&2
	exit 1
fi
echo "unit-security: microvm@ exposure $exposure (limit $limit)"
if awk -v e="$exposure" -v l="$limit" 'BEGIN { exit !(e > l) }'; then
	echo "$report" | grep '✗' >&2
	echo "unit-security: exposure $exposure is above $limit" >&2
	exit 1
fi
