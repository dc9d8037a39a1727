#!/usr/bin/env bash
# Runs every test tier (DESIGN.md "Tests, in tiers"), after installing what the tiers need when
# it is missing. A tier that cannot run here prints "skipped: <tier>: <why>" and is left out of
# the run, so it never counts as passed.
#
#   1 unit, fixture and snapshot tests       (always)
#   2 generated text: shellcheck             (needs shellcheck)
#   3 boot tests: qemu guests under TCG      (needs qemu and checks/boot-env.sh's kernel)
#   4 Nix evaluation tests                   (needs nix-instantiate and NIXPKGS_LIB)
#  4b the evaluator plugin in a real Nix      (needs a Nix >= 2.24 with its C API)
#   5 real VMMs accept the generated runners (needs root, the boot environment and each VMM:
#     alioth is installed from crates.io; firecracker, cloud-hypervisor, stratovirt and
#     kvmtool's lkvm are found in MICROVM_TEST_VMMS, a directory, or on PATH)
#
# Usage: checks/test.sh [extra cargo-nextest arguments]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$repo"
export DEBIAN_FRONTEND=noninteractive
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin:$HOME/.cargo/bin

say() { printf 'test.sh: %s\n' "$*" >&2; }

# Debian packages the tiers use; installed when missing and we are root.
packages=(shellcheck qemu-system-x86 busybox-static erofs-utils squashfs-tools e2fsprogs cpio
	iproute2 kmod socat curl nix-bin libcap-ng-dev libseccomp-dev systemd)
# shellcheck source=/dev/null
. "$here/lib/apt.sh"
mapfile -t missing < <(apt_missing "${packages[@]}")
if ((${#missing[@]})); then
	if ((EUID == 0)); then
		say "installing ${missing[*]}"
		apt_refresh >&2
		apt_install "${missing[@]}" >&2
	else
		say "not root: cannot install ${missing[*]}"
	fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
	say "installing cargo-nextest"
	cargo install cargo-nextest --locked --quiet
fi

skip=()
skipped() {
	echo "skipped: $1: $2"
	skip+=("$3")
}

if ! command -v shellcheck >/dev/null || ! command -v systemd-analyze >/dev/null; then
	skipped "tier 2 (generated text)" "shellcheck or systemd-analyze is not installed" 'binary(generated_text)'
fi

boot_env=
if ! command -v qemu-system-x86_64 >/dev/null; then
	skipped "tier 3 (boot tests)" "qemu-system-x86_64 is not installed" 'binary(boot) | binary(boot_ephemeral) | binary(boot_up) | binary(systemd_units) | binary(virtiofsd_run)'
elif ! boot_env=$("$here/boot-env.sh" | tail -n 1); then
	skipped "tier 3 (boot tests)" "checks/boot-env.sh could not prepare the guest kernel" 'binary(boot) | binary(boot_ephemeral) | binary(boot_up) | binary(systemd_units) | binary(virtiofsd_run)'
	boot_env=
else
	export MICROVM_TEST_ENV=$boot_env
	if ((EUID != 0)); then
		skipped "tier 3 tap tests" "network namespaces need root" 'test(tap_network) | test(host_path) | (binary(boot_up) & test(/proxy/))'
		skipped "tier 3 units under systemd" "a systemd of the test's own needs root" 'binary(systemd_units)'
	elif [[ ! -x /lib/systemd/systemd ]]; then
		skipped "tier 3 units under systemd" "/lib/systemd/systemd is missing (Debian's systemd package)" 'binary(systemd_units)'
	fi
fi

# Tier 4 reads nixpkgs' lib from NIXPKGS_LIB. Unset, the revision pinned in checks/nixpkgs-lib.rev
# is taken from the per-user cache, where it is downloaded on first use.
nixpkgs_lib_hint=
if [[ -z ${NIXPKGS_LIB:-} ]]; then
	rev=$(<"$here/nixpkgs-lib.rev")
	dest=${XDG_CACHE_HOME:-$HOME/.cache}/microvm-codegen/nixpkgs-lib-$rev
	if [[ ! -f $dest/lib/default.nix ]]; then
		url=https://github.com/nix-community/nixpkgs.lib/archive/$rev.tar.gz
		tmp=$(mktemp -d "${TMPDIR:-/tmp}/nixpkgs-lib.XXXXXX")
		if curl -fsSL --max-time 60 "$url" | tar -xz -C "$tmp" --strip-components=1 2>/dev/null &&
			[[ -f $tmp/lib/default.nix ]]; then
			mkdir -p "${dest%/*}"
			rm -rf "$dest"
			mv "$tmp" "$dest"
		else
			rm -rf "$tmp"
			nixpkgs_lib_hint="nixpkgs.lib $rev is not in $dest and cannot be downloaded from $url;"
			nixpkgs_lib_hint+=" set NIXPKGS_LIB to the lib/ of a nixpkgs or nix-community/nixpkgs.lib"
			nixpkgs_lib_hint+=" checkout, or unpack that revision so that $dest/lib/default.nix exists"
		fi
	fi
	if [[ -f $dest/lib/default.nix ]]; then
		export NIXPKGS_LIB=$dest/lib
	fi
fi
tier4=yes
if ! command -v nix-instantiate >/dev/null; then
	skipped "tier 4 (Nix evaluation)" "nix-instantiate is not installed" 'binary(nix_eval) | binary(nix_host) | binary(nix_ci_runners) | binary(nix_fleet)'
	skipped "Nix parse test" "nix-instantiate is not installed" 'binary(nix_parse)'
	tier4=
elif [[ -z ${NIXPKGS_LIB:-} ]]; then
	skipped "tier 4 (Nix evaluation)" "$nixpkgs_lib_hint" 'binary(nix_eval) | binary(nix_host) | binary(nix_ci_runners) | binary(nix_fleet)'
	tier4=
fi
# lib/microvm-codegen.nix uses lib.fileset, which needs builtins.readFileType (Nix >= 2.14), so its
# test runs under a newer Nix than Debian's: MICROVM_TEST_NIX (its bin directory), else one on
# PATH or where Nix is installed (its profiles, /opt or /usr/local for a build from source).
modern_nix=
nix_dirs=("${MICROVM_TEST_NIX:-}")
while read -r found; do nix_dirs+=("${found%/*}"); done < <(type -ap nix-instantiate)
nix_dirs+=(/nix/var/nix/profiles/default/bin "$HOME/.nix-profile/bin" /opt/nix*/bin /usr/local/nix*/bin)
for dir in "${nix_dirs[@]}"; do
	[[ -n $dir && -x $dir/nix-instantiate ]] || continue
	version=$("$dir/nix-instantiate" --version 2>/dev/null | awk '{ print $NF }')
	if [[ -n $version ]] && printf '%s\n' 2.14 "$version" | sort -V -C; then
		modern_nix=$dir
		break
	fi
done
if [[ -z $tier4 ]]; then
	skipped "Nix package test" "tier 4 cannot run here" 'binary(nix_package)'
elif [[ -z $modern_nix ]]; then
	skipped "Nix package test" "lib/microvm-codegen.nix needs a Nix >= 2.14 (builtins.readFileType), and none \
was found (Debian's is 2.8); build NixOS/nix >= 2.14 and set MICROVM_TEST_NIX to its bin directory" \
		'binary(nix_package)'
else
	export MICROVM_TEST_NIX=$modern_nix
	say "Nix package test with $modern_nix/nix-instantiate"
fi
# Tier 4b, the evaluator plugin (nix-plugin/): a Nix >= 2.24 with its C API (libnixexprc), which
# the plugin is built against (NIX_C_API, its prefix) and loaded into.
nix_c_api=
if [[ -n $modern_nix ]]; then
	prefix=${modern_nix%/bin}
	version=$("$modern_nix/nix-instantiate" --version 2>/dev/null | awk '{ print $NF }')
	if printf '%s\n' 2.24 "$version" | sort -V -C && [[ -f $prefix/lib/libnixexprc.so ]]; then
		nix_c_api=$prefix
	fi
fi
if [[ -z $nix_c_api ]]; then
	skipped "tier 4b (evaluator plugin)" "needs a Nix >= 2.24 built with its C API (lib/libnixexprc.so), and none \
was found; build NixOS/nix >= 2.24 and set MICROVM_TEST_NIX to its bin directory" 'binary(evaluator)'
else
	export NIX_C_API=$nix_c_api
	say "evaluator plugin tests with Nix $version in $nix_c_api"
fi
# A spec evaluated by Nix boots a guest: needs the boot environment (tier 3) and tier 4.
if [[ -z $boot_env ]]; then
	skipped "tiers 3+4 (Nix-evaluated VM boots)" "no boot environment" 'binary(nix_e2e)'
elif [[ -z $tier4 ]]; then
	skipped "tiers 3+4 (Nix-evaluated VM boots)" "tier 4 cannot run here" 'binary(nix_e2e)'
fi

# Tier 5 starts the real VMMs. alioth is on crates.io and installed into the per-user cache;
# the others are in no registry: whoever runs the tests builds them from their public sources
# and puts them on PATH or in the directory MICROVM_TEST_VMMS names.
alioth_version=0.12.0
alioth_root=${XDG_CACHE_HOME:-$HOME/.cache}/microvm-codegen/alioth-cli-$alioth_version
if [[ -n $boot_env && ! -x $alioth_root/bin/alioth ]]; then
	say "cargo install alioth-cli $alioth_version (takes a few minutes)"
	cargo install alioth-cli --version "=$alioth_version" --locked --quiet --root "$alioth_root" >&2 ||
		say "cargo install alioth-cli failed"
fi
export PATH=$alioth_root/bin:$PATH
vmm_on_path() {
	[[ -n ${MICROVM_TEST_VMMS:-} && -x $MICROVM_TEST_VMMS/$1 ]] || command -v "$1" >/dev/null
}
if [[ -z $boot_env ]]; then
	skipped "tier 5 (real VMMs)" "no boot environment" 'binary(real_vmms)'
elif ((EUID != 0)); then
	skipped "tier 5 (real VMMs)" "network namespaces and huge pages need root" 'binary(real_vmms)'
else
	for vmm in firecracker:firecracker cloud-hypervisor:cloud_hypervisor stratovirt:stratovirt \
		lkvm:kvmtool alioth:alioth; do
		program=${vmm%%:*} test=${vmm#*:}
		if ! vmm_on_path "$program"; then
			how="build it from its public sources and put $program on PATH or in \$MICROVM_TEST_VMMS"
			[[ $program == alioth ]] && how="cargo install alioth-cli failed; see above"
			skipped "tier 5: ${test//_/-}" "$program is not in \$MICROVM_TEST_VMMS or on PATH ($how)" \
				"binary(real_vmms) & test(/^${test}_/)"
		fi
	done
	if [[ ! -x /lib/systemd/systemd ]]; then
		skipped "tier 5 under systemd" "/lib/systemd/systemd is missing (Debian's systemd package)" \
			'binary(real_vmms) & test(/as_a_microvm_unit$/)'
	fi
fi

# Failures of the checks below are reported at the end, after every tier has run.
failed=()

# The sandbox rating of the generated microvm@ unit.
if command -v systemd-analyze >/dev/null; then
	"$here/unit-security.sh" || failed+=("checks/unit-security.sh")
else
	skipped "unit sandbox rating" "systemd-analyze is not installed" 'none()'
fi

# The README's demo, exactly as a newcomer runs it.
if [[ -n $boot_env ]]; then
	"$here/demo.sh" || failed+=("checks/demo.sh")
else
	echo "skipped: README demo: no boot environment"
fi

filter="all()"
for s in "${skip[@]}"; do
	# Parenthesised: in nextest's filter language `-` binds tighter than `|`.
	filter="$filter - ($s)"
done
# A skipped tier must not run after all: the filter has to leave every one of its tests out.
for s in "${skip[@]}"; do
	if cargo nextest list --workspace -T oneline -E "($filter) & ($s)" | grep -q .; then
		say "the test filter still selects tests of a skipped tier ($s)"
		exit 1
	fi
done
cargo nextest run --workspace --no-fail-fast -E "$filter" "$@" || failed+=("cargo nextest run")
if ((${#failed[@]})); then
	say "failed: ${failed[*]}"
	exit 1
fi
