#!/bin/sh
# microvm-up: mounts and environment that `microvm up` announces on the kernel command line, so
# a runner regenerated with other shares, volumes or `--env` needs no rebuilt guest:
#
#   microvm.up.mount=9p:TAG:GUESTPATH        a 9p share, mounted read-only
#   microvm.up.mount=virtiofs:TAG:GUESTPATH  a virtiofs share, mounted read-only
#   microvm.up.mount=disk:ID:GUESTPATH       the ext4 virtio disk with serial ID (else label ID),
#                                            mounted read-write
#   microvm.up.env=BASE64                    KEY="value" lines for /run/microvm/env
#   microvm.up.net=MAC,ADDRESS/PREFIX,HOST   the address of the interface with that MAC, on
#                                            the tap the host forwards ports over (HOST is
#                                            the host's end; no route is added)
#
# Usage: up-announcements.sh [CMDLINE-FILE]   (default /proc/cmdline)
# One line per action on stdout; errors on stderr. Every announcement is tried; the exit status
# is 1 when any failed. Without microvm.up.* parameters it does nothing.
#
# POSIX sh with mount, mkdir, base64, cat, chmod, sleep and ip only: it runs as the guest module's
# microvm-up.service and in the busybox test guest. MICROVM_UP_RUN_DIR (/run/microvm) and
# MICROVM_UP_SYS_BLOCK (/sys/block) and MICROVM_UP_SYS_NET (/sys/class/net) move what it
# writes and where it finds disks and interfaces, and
# MICROVM_UP_DRY_RUN=1 prints each mkdir and mount instead of running it, for tests (busybox sh
# runs its own applets whatever PATH says, so stand-in commands cannot take their place).

LC_ALL=C
export LC_ALL

cmdline=${1:-/proc/cmdline}
run_dir=${MICROVM_UP_RUN_DIR:-/run/microvm}
sys_block=${MICROVM_UP_SYS_BLOCK:-/sys/block}
sys_net=${MICROVM_UP_SYS_NET:-/sys/class/net}
status=0
env_text=
have_env=

say() { printf 'microvm-up: %s\n' "$*"; }
# run COMMAND...: COMMAND, or in a dry run its words (which hold no spaces: see guest_path).
run() {
	if [ -n "${MICROVM_UP_DRY_RUN:-}" ]; then
		say "dry run: $*"
	else
		"$@"
	fi
}
fail() {
	printf 'microvm-up: error: %s\n' "$*" >&2
	status=1
}

# guest_path PATH: sets `path` to PATH without empty and `.` components, or fails for a path
# the host would refuse too (characters outside [A-Za-z0-9._/-], `..`) and for places a mount
# would break the guest (/, /nix, /proc, /sys, /dev).
guest_path() {
	case $1 in
	/*) ;;
	*) return 1 ;;
	esac
	case $1 in
	*[!A-Za-z0-9._/-]*) return 1 ;;
	esac
	path=
	rest=$1/
	while [ -n "$rest" ]; do
		part=${rest%%/*}
		rest=${rest#*/}
		case $part in
		'' | .) ;;
		..) return 1 ;;
		*) path=$path/$part ;;
		esac
	done
	case $path in
	'' | /nix | /nix/store | /nix/store/* | /proc | /proc/* | /sys | /sys/* | /dev | /dev/*)
		return 1
		;;
	esac
}

# disk_with_serial ID: prints the vdX whose virtio serial is ID. The guest sees at most the
# first 20 bytes of a serial, so a 20-byte serial that begins ID matches too.
disk_with_serial() {
	for dir in "$sys_block"/vd*; do
		[ -r "$dir/serial" ] || continue
		serial=$(cat "$dir/serial") || continue
		[ -n "$serial" ] || continue
		case $1 in
		"$serial") ;;
		"$serial"*) [ ${#serial} -eq 20 ] || continue ;;
		*) continue ;;
		esac
		printf '%s\n' "${dir##*/}"
		return 0
	done
	return 1
}

# any_disk: prints the first vdX there is.
any_disk() {
	for dir in "$sys_block"/vd*; do
		if [ -e "$dir" ]; then
			printf '%s\n' "${dir##*/}"
			return
		fi
	done
}

# announce_mount VALUE: one microvm.up.mount=VALUE. The source lies between the first and the
# last `:` (guest paths have none).
announce_mount() {
	kind=${1%%:*}
	after_kind=${1#*:}
	source=${after_kind%:*}
	target=${after_kind##*:}
	if [ "$kind" = "$1" ] || [ "$source" = "$after_kind" ]; then
		fail "microvm.up.mount=$1: expected KIND:SOURCE:GUESTPATH"
		return
	fi
	case $kind in
	9p | virtiofs | disk) ;;
	*)
		fail "microvm.up.mount=$1: unknown kind \"$kind\" (9p, virtiofs or disk)"
		return
		;;
	esac
	case $source in
	'' | -*)
		fail "microvm.up.mount=$1: the source \"$source\" is empty or begins with -"
		return
		;;
	esac
	if ! guest_path "$target"; then
		fail "microvm.up.mount=$1: refusing the guest path \"$target\" (absolute, of A-Z a-z 0-9 . _ / -, no .., not /, /nix, /proc, /sys or /dev)"
		return
	fi
	if ! run mkdir -p "$path"; then
		fail "cannot create the mount point $path"
		return
	fi
	case $kind in
	9p)
		if run mount -t 9p -o trans=virtio,version=9p2000.L,msize=65536,ro "$source" "$path"; then
			say "mounted 9p $source on $path (ro)"
		else
			fail "cannot mount the 9p share $source on $path"
		fi
		;;
	virtiofs)
		if run mount -t virtiofs -o ro "$source" "$path"; then
			say "mounted virtiofs $source on $path (ro)"
		else
			fail "cannot mount the virtiofs share $source on $path"
		fi
		;;
	disk)
		# Where this runs before the kernel has probed any disk, wait for one, up to 5 s.
		tries=5
		until disk=$(disk_with_serial "$source"); do
			tries=$((tries - 1))
			if [ "$tries" -le 0 ] || [ -n "$(any_disk)" ]; then
				break
			fi
			sleep 1
		done
		if [ -n "$disk" ]; then
			device=/dev/$disk
		else
			device=LABEL=$source
		fi
		if run mount -t ext4 -o rw "$device" "$path"; then
			say "mounted disk $source ($device) on $path (rw)"
		else
			fail "cannot mount the disk $source ($device) on $path"
		fi
		;;
	esac
}

# interface_with_mac MAC: prints the interface whose address is MAC.
interface_with_mac() {
	for dir in "$sys_net"/*; do
		[ -r "$dir/address" ] || continue
		if [ "$(cat "$dir/address")" = "$1" ]; then
			printf '%s\n' "${dir##*/}"
			return 0
		fi
	done
	return 1
}

# announce_net VALUE: one microvm.up.net=MAC,ADDRESS/PREFIX,HOST.
announce_net() {
	mac=${1%%,*}
	rest=${1#*,}
	address=${rest%%,*}
	host=${rest#*,}
	case $mac in
	[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]) ;;
	*)
		fail "microvm.up.net=$1: \"$mac\" is not a MAC address (lower-case hex)"
		return
		;;
	esac
	case $address in
	*[!0-9./]* | */*/* | '') bad=1 ;;
	*/*) bad= ;;
	*) bad=1 ;;
	esac
	case $host in
	*[!0-9.]* | '') bad=1 ;;
	esac
	if [ -n "$bad" ]; then
		fail "microvm.up.net=$1: expected MAC,ADDRESS/PREFIX,HOST"
		return
	fi
	tries=5
	until interface=$(interface_with_mac "$mac"); do
		tries=$((tries - 1))
		if [ "$tries" -le 0 ]; then
			fail "microvm.up.net=$1: no interface has the address $mac"
			return
		fi
		sleep 1
	done
	if run ip address replace "$address" dev "$interface" && run ip link set dev "$interface" up; then
		say "gave $interface the address $address (the host is $host)"
	else
		fail "cannot give $interface the address $address"
	fi
}

# announce_env VALUE: one microvm.up.env=VALUE, base64 of KEY="value" lines.
announce_env() {
	# busybox's base64 skips what is not base64; check the alphabet and length first.
	case $1 in
	*[!A-Za-z0-9+/=]*) bad=1 ;;
	*) bad=$((${#1} % 4)) ;;
	esac
	if [ "$bad" != 0 ] || ! text=$(printf '%s\n' "$1" | base64 -d 2>/dev/null); then
		fail "microvm.up.env: not base64"
		return
	fi
	bad=
	while IFS= read -r line; do
		case $line in
		'' | '#'*) ;;
		[A-Za-z_]*=*)
			key=${line%%=*}
			case $key in
			*[!A-Za-z0-9_]*) bad=$line ;;
			esac
			;;
		*) bad=$line ;;
		esac
	done <<EOF
$text
EOF
	if [ -n "$bad" ]; then
		fail "microvm.up.env: not a KEY=\"value\" line: $bad"
		return
	fi
	env_text=$env_text$text
	[ -z "$text" ] || env_text=$env_text'
'
	have_env=1
}

if ! words=$(cat "$cmdline"); then
	fail "cannot read $cmdline"
	exit 1
fi
# Split the command line into words, which are never globs.
set -f
# shellcheck disable=SC2086
set -- $words
set +f
for word; do
	# The kernel takes "name=value with spaces"; these values have no spaces, drop the quotes.
	while :; do
		case $word in
		*'"'*) word=${word%%'"'*}${word#*'"'} ;;
		*) break ;;
		esac
	done
	case $word in
	microvm.up.mount=*) announce_mount "${word#microvm.up.mount=}" ;;
	microvm.up.env=*) announce_env "${word#microvm.up.env=}" ;;
	microvm.up.net=*) announce_net "${word#microvm.up.net=}" ;;
	microvm.up.*) fail "unknown parameter ${word%%=*}" ;;
	esac
done

if [ -n "$have_env" ]; then
	count=0
	while IFS= read -r line; do
		case $line in
		'' | '#'*) ;;
		*) count=$((count + 1)) ;;
		esac
	done <<EOF
$env_text
EOF
	if mkdir -p "$run_dir" && chmod 0755 "$run_dir" &&
		(umask 077 && printf '%s' "$env_text" >"$run_dir/env") && chmod 0600 "$run_dir/env"; then
		if [ "$count" = 1 ]; then noun=variable; else noun=variables; fi
		say "wrote $run_dir/env ($count $noun)"
	else
		fail "cannot write $run_dir/env"
	fi
fi
exit "$status"
