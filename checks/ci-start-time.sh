#!/usr/bin/env bash
# Start time of one throwaway CI runner VM, as a pool VM starts: a generated runner with an
# ephemeral scratch volume (made with mkfs at every start) and a secret disk copied from a token
# file, from the moment `microvm-run` is started (the unit's ExecStart) to the moment the guest
# has read the token, which is when a runner service could register.
#
# What it is and is not: the guest is the busybox test guest (checks/guest/init), not a NixOS
# guest running github-runner, so the guest's own boot is shorter than a real one; and it runs
# under TCG (this machine's /dev/kvm cannot run stock kernels), which is far slower than KVM.
# The result says both. Run `checks/boot-env.sh` first; MICROVM_TEST_ENV points at its env.
# Usage: checks/ci-start-time.sh [runs] [scratch MiB]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
runs=${1:-3}
scratch_mib=${2:-2048}
env_file=${MICROVM_TEST_ENV:-$repo/.cache/boot/env}
target=${CARGO_TARGET_DIR:-$repo/target}
codegen=${CODEGEN:-$target/debug/microvm-codegen}

[[ -r $env_file ]] || {
	echo "ci-start-time: no boot environment at $env_file (run checks/boot-env.sh)" >&2
	exit 1
}
# shellcheck source=/dev/null
. "$env_file"
if [[ ! -x $codegen ]]; then
	cargo build -q -p microvm-codegen --bin microvm-codegen
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
printf 'ci-start-time-token' >"$work/token"

tool() { command -v "$1"; }
cat >"$work/spec.json" <<EOF
{
  "specVersion": 1,
  "hostName": "ci-start",
  "hypervisor": "qemu",
  "cpu": "max",
  "vcpu": 2,
  "mem": 512,
  "kernel": "$MICROVM_TEST_KERNEL",
  "initrdPath": "$MICROVM_TEST_INITRD",
  "kernelParams": ["loglevel=4", "tsc_early_khz=$MICROVM_TEST_TSC_KHZ", "mvtest=rawdisk", "mvtest.serial=ci-token"],
  "socket": "vm.sock",
  "host": { "user": "root", "group": "root" },
  "volumes": [
    { "image": "scratch.img", "serial": "scratch", "label": "ci-scratch", "size": $scratch_mib, "ephemeral": true },
    { "image": "ci-token.img", "serial": "ci-token", "readOnly": true, "autoCreate": false,
      "ephemeral": true, "contentsFile": "$work/token" }
  ],
  "tools": {
    "bash": "$(tool bash)", "qemu": "$(tool qemu-system-x86_64)", "socat": "$(tool socat)",
    "mkdir": "$(tool mkdir)", "ln": "$(tool ln)", "rm": "$(tool rm)", "cat": "$(tool cat)",
    "truncate": "$(tool truncate)", "chattr": "$(tool chattr)", "sleep": "$(tool sleep)",
    "mkfs.ext4": "$(PATH=$PATH:/usr/sbin:/sbin command -v mkfs.ext4)"
  }
}
EOF
"$codegen" generate --spec "$work/spec.json" --out "$work/runner" >/dev/null 2>&1
mkdir -p "$work/vm"

now_ms() { date +%s%3N; }
times=()
for run in $(seq "$runs"); do
	# Emptied before the clock starts: the last run's marker must not count.
	: >"$work/console"
	start=$(now_ms)
	got=
	(cd "$work/vm" && exec timeout 300 "$work/runner/bin/microvm-run") >"$work/console" 2>"$work/stderr" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		if grep -q 'MVTEST:rawdisk:content=ci-start-time-token' "$work/console"; then
			got=$(($(now_ms) - start))
			break
		fi
		sleep 0.05
	done
	# The guest powers off after its scenario.
	wait "$pid" || true
	if [[ -z $got ]] && grep -q 'MVTEST:rawdisk:content=ci-start-time-token' "$work/console"; then
		got=$(($(now_ms) - start))
	fi
	(cd "$work/vm" && "$work/runner/bin/microvm-discard")
	[[ -n $got ]] || {
		echo "ci-start-time: run $run: the guest never read the token" >&2
		exit 1
	}
	times+=("$got")
	echo "ci-start-time: run $run: ${got} ms" >&2
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(sed -n "$(((runs + 1) / 2))p" <<<"$sorted")
echo "ci-start-time: median ${median} ms over $runs runs from microvm-run to the token read in the guest (${scratch_mib} MiB ephemeral scratch made by mkfs.ext4 at start, secret disk copied); qemu under TCG, busybox test guest (no NixOS boot, no runner registration)"
