# shellcheck shell=bash
# Installing Debian packages for the checks, sourced by checks/test.sh and checks/boot-env.sh.
#
# The trap it exists for: this kind of machine ships qemu-utils 10.0 from bookworm-backports,
# whose Breaks on qemu-system-common (< 8.0) make `apt-get install qemu-system-x86` (7.2 from
# bookworm) refuse. qemu-utils has to come from the same source version as qemu-system-x86,
# which here is a downgrade that apt only makes when asked by version.

# apt_missing PKG...: prints the packages that are not installed, one a line.
apt_missing() {
	local p
	for p in "$@"; do
		dpkg -s "$p" 2>/dev/null | grep -qx 'Status: install ok installed' || echo "$p"
	done
}

# apt_source_version VERSION: VERSION without a binNMU suffix (+bN), which differs between the
# binary packages of one source upload.
apt_source_version() {
	local v=$1
	[[ $v =~ ^(.*)\+b[0-9]+$ ]] && v=${BASH_REMATCH[1]}
	printf '%s\n' "$v"
}

# apt_qemu_utils_pin: prints `qemu-utils=VERSION` when the installed qemu-utils is from another
# source version than qemu-system-x86's candidate, and nothing when they already match.
apt_qemu_utils_pin() {
	local want have v
	want=$(apt-cache policy qemu-system-x86 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
	[[ -n $want && $want != "(none)" ]] || return 0
	want=$(apt_source_version "$want")
	have=$(dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null) || return 0
	[[ $(apt_source_version "$have") == "$want" ]] && return 0
	while read -r v; do
		if [[ $(apt_source_version "$v") == "$want" ]]; then
			printf 'qemu-utils=%s\n' "$v"
			return 0
		fi
	done < <(apt-cache madison qemu-utils | awk -F'|' '{ gsub(/ /, "", $2); print $2 }')
	echo "apt.sh: no qemu-utils of version $want to install beside qemu-system-x86" >&2
	return 1
}

# Another apt (unattended upgrades, a second job) may hold dpkg's lock: wait for it rather than fail.
apt_lock_wait=(-o DPkg::Lock::Timeout=600)

# apt_refresh: refreshes the package lists (as root).
apt_refresh() {
	apt-get "${apt_lock_wait[@]}" update -qq
}

# apt_install PKG...: installs PKG... (as root), with qemu-utils matched to qemu-system-x86.
apt_install() {
	local -a pkgs=("$@") extra=()
	local p pin
	for p in "${pkgs[@]}"; do
		if [[ $p == qemu-system-x86 ]]; then
			pin=$(apt_qemu_utils_pin) || return 1
			[[ -n $pin ]] && extra=("$pin" --allow-downgrades)
		fi
	done
	apt-get "${apt_lock_wait[@]}" install -y -qq --no-install-recommends "${pkgs[@]}" "${extra[@]}"
}
