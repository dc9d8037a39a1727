#!/usr/bin/env bash
# The README's demo on a Debian machine without Nix: generates a runner from an example spec,
# shows what it wrote, boots the guest under TCG (the boot tests' kernel and busybox
# initramfs), and shuts it down cleanly with the generated microvm-shutdown. Exits 0 only
# when the guest came up and powered off cleanly.
#
# Usage: checks/demo.sh        (installs what it needs when run as root)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
say() { printf '\n\033[1mdemo: %s\033[0m\n' "$*"; }
[[ -t 1 ]] || say() { printf '\ndemo: %s\n' "$*"; }

say "preparing a guest kernel and initramfs (first run: about a minute)"
env_file=$("$here/boot-env.sh" --no-virtiofsd | tail -n 1)
# shellcheck source=/dev/null
. "$env_file"

say "building microvm-codegen"
(cd "$repo" && cargo build --quiet --bin microvm-codegen)
codegen=${CARGO_TARGET_DIR:-$repo/target}/debug/microvm-codegen

work=$(mktemp -d "${TMPDIR:-/tmp}/microvm-demo.XXXXXX")
vm=
cleanup() {
	[[ -n $vm ]] && kill "$vm" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

tool() { command -v "$1" || { echo "demo: $1 is not installed" >&2; exit 1; }; }
cat >"$work/spec.json" <<JSON
{
  "specVersion": 1,
  "hostName": "demo",
  "hypervisor": "qemu",
  "cpu": "max",
  "vcpu": 1,
  "mem": 256,
  "kernel": "$MICROVM_TEST_KERNEL",
  "initrdPath": "$MICROVM_TEST_INITRD",
  "kernelParams": ["loglevel=4", "tsc_early_khz=$MICROVM_TEST_TSC_KHZ", "mvtest=shutdown"],
  "socket": "demo.sock",
  "tools": {
    "bash": "$(tool bash)",
    "qemu": "$(tool qemu-system-x86_64)",
    "socat": "$(tool socat)"
  }
}
JSON
say "the runner spec ($work/spec.json)"
cat "$work/spec.json"

say "microvm-codegen generate --spec spec.json --out runner"
"$codegen" generate --spec "$work/spec.json" --out "$work/runner"
say "what it wrote"
(cd "$work/runner" && find . -type f -o -type l | sort)
say "runner/bin/microvm-run"
cat "$work/runner/bin/microvm-run"

say "booting: runner/bin/microvm-run (console below)"
cd "$work"
runner/bin/microvm-run </dev/null >console.log 2>&1 &
vm=$!
tail -n +1 -f console.log --pid "$vm" | sed -u 's/^/  guest | /' &
deadline=$((SECONDS + 120))
until grep -q '^MVTEST:shutdown:ready' console.log; do
	if ! kill -0 "$vm" 2>/dev/null || ((SECONDS > deadline)); then
		say "the guest did not come up"
		exit 1
	fi
	sleep 0.2
done

say "the guest is up; runner/bin/microvm-shutdown presses its power button over QMP"
runner/bin/microvm-shutdown
status=0
wait "$vm" || status=$?
vm=
sleep 0.3
if ((status == 0)) && grep -q '^MVTEST:poweroff' console.log; then
	say "the guest powered off cleanly and microvm-run exited 0"
else
	say "microvm-run exited $status without a clean poweroff"
	exit 1
fi
