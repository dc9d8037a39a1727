#!/usr/bin/env bash
# Prepare what the boot tests need, idempotently: the Debian standard-flavour
# kernel, one busybox initramfs (checks/guest/init plus the kernel modules the
# guest loads, and socat for vsock), virtiofsd and vhost-device-vsock. Meant for a Debian 12 host; run as root when
# apt packages are missing.
#
# Usage: checks/boot-env.sh [--no-virtiofsd]   (--no-virtiofsd skips both cargo installs)
#
# Everything goes to ${MICROVM_TEST_CACHE:-<repo>/.cache/boot}. The last line
# on stdout is the path of <cache>/env, which sets MICROVM_TEST_KERNEL,
# MICROVM_TEST_INITRD, MICROVM_TEST_VIRTIOFSD and MICROVM_TEST_VHOST_VSOCK (empty when
# not built),
# MICROVM_TEST_TSC_KHZ, MICROVM_TEST_VMLINUX (the kernel as an ELF file) and
# MICROVM_TEST_STORE_DISK (a small erofs image). Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${MICROVM_TEST_CACHE:-$repo/.cache/boot}
init_src=$here/guest/init
# The guest module's script for `microvm up`, which the init runs as /bin/microvm-up.
up_src=$repo/nixos-modules/microvm/up-announcements.sh
busybox=/bin/busybox

# Modules the guest init loads; their dependencies are computed below.
wanted_modules=(
	virtio_mmio virtio_pci virtio_blk virtio_net virtio_balloon virtio_console virtio_rng
	erofs squashfs ext4 9pnet_virtio 9p fuse virtiofs
	button evdev
	vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
)
# Bump when the initramfs layout changes, to force a rebuild.
layout=3

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export DEBIAN_FRONTEND=noninteractive

say() { printf 'boot-env: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

with_virtiofsd=1
for arg in "$@"; do
	case $arg in
	--no-virtiofsd) with_virtiofsd=0 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
		exit 0
		;;
	*) die "unknown argument: $arg (try --help)" ;;
	esac
done

tmpdirs=()
cleanup() { rm -rf "${tmpdirs[@]}"; }
trap cleanup EXIT

mkdir -p "$cache/kernel"
exec 9>"$cache/.lock"
flock -w 900 9 || die "another boot-env.sh holds $cache/.lock"

# --- apt packages -----------------------------------------------------------

apt_updated=0
apt_update() {
	((apt_updated)) && return 0
	((EUID == 0)) || die "apt metadata is missing or stale; run as root"
	say "apt-get update"
	apt_refresh >&2 || die "apt-get update failed"
	apt_updated=1
}

packages=(qemu-system-x86 busybox-static cpio kmod erofs-utils squashfs-tools e2fsprogs iproute2 socat)
((with_virtiofsd)) && packages+=(libcap-ng-dev libseccomp-dev)
# shellcheck source=/dev/null
. "$here/lib/apt.sh"
mapfile -t missing < <(apt_missing "${packages[@]}")
if ((${#missing[@]})); then
	((EUID == 0)) || die "missing packages (${missing[*]}); run as root"
	apt_update
	say "installing ${missing[*]}"
	apt_install "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
fi
[[ -x $busybox ]] || die "$busybox is missing (busybox-static)"

# --- kernel -----------------------------------------------------------------

kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-/ { print $2; exit }'
}
pkg=$(kernel_pkg)
if [[ -z $pkg ]]; then
	apt_update
	pkg=$(kernel_pkg)
fi
[[ -n $pkg ]] || die "apt-cache cannot resolve linux-image-amd64"
ver=$(apt-cache show --no-all-versions "$pkg" | awk '/^Version:/ { print $2; exit }')
[[ -n $ver ]] || die "no candidate version for $pkg"

kdir=$cache/kernel/${pkg}_$ver
if [[ ! -d $kdir ]]; then
	say "downloading $pkg $ver"
	tmp=$(mktemp -d "$cache/kernel/.tmp.XXXXXX")
	tmpdirs+=("$tmp")
	chmod 0755 "$tmp"
	(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >&2) ||
		die "apt-get download $pkg=$ver failed"
	dpkg-deb -x "$tmp"/*.deb "$tmp/root" || die "cannot unpack $pkg"
	rm -f "$tmp"/*.deb
	# Newer packages ship /usr/lib/modules only; depmod -b looks in lib/.
	if [[ ! -e $tmp/root/lib && -d $tmp/root/usr/lib/modules ]]; then
		ln -s usr/lib "$tmp/root/lib"
	fi
	mv "$tmp" "$kdir"
	# Keep only the current kernel.
	find "$cache/kernel" -mindepth 1 -maxdepth 1 -type d ! -name '.*' \
		! -path "$kdir" -exec rm -rf {} +
fi
root=$kdir/root
kvers=("$root"/lib/modules/*)
[[ ${#kvers[@]} -eq 1 && -d ${kvers[0]} ]] || die "expected one module tree in $root/lib/modules"
kver=${kvers[0]##*/}
mdir=$root/lib/modules/$kver
vmlinuz=$root/boot/vmlinuz-$kver
[[ -f $vmlinuz ]] || die "no $vmlinuz in $pkg"
if [[ ! -s $mdir/modules.dep || ! -s $mdir/modules.softdep ]]; then
	say "depmod $kver"
	depmod -b "$root" "$kver" || die "depmod failed"
fi

# --- module closure from modules.dep, modules.softdep and modules.alias ------

# modname PATH: sets REPLY to the module name (kernel/fs/9p/9p.ko -> 9p).
modname() {
	REPLY=${1##*/}
	REPLY=${REPLY%%.ko*}
	REPLY=${REPLY//-/_}
}

declare -A mod_path=() mod_deps=() is_builtin=() builtin_alias=() soft_pre=() soft_post=() state=()
while IFS= read -r line; do
	modname "${line%%:*}"
	mod_path[$REPLY]=${line%%:*}
	mod_deps[$REPLY]=${line#*:}
done <"$mdir/modules.dep"
while IFS= read -r line; do
	modname "$line"
	is_builtin[$REPLY]=1
done <"$mdir/modules.builtin"
if [[ -f $mdir/modules.builtin.modinfo ]]; then
	while IFS= read -r a; do
		builtin_alias[${a//-/_}]=1
	done < <(tr '\0' '\n' <"$mdir/modules.builtin.modinfo" | sed -n 's/^[^.]*\.alias=//p')
fi
while read -r kw mod rest; do
	[[ $kw == softdep ]] || continue
	modname "$mod"
	m=$REPLY
	where=
	for w in $rest; do
		case $w in
		pre:) where=pre ;;
		post:) where=post ;;
		*)
			if [[ $where == pre ]]; then
				soft_pre[$m]+=" $w"
			elif [[ $where == post ]]; then
				soft_post[$m]+=" $w"
			fi
			;;
		esac
	done
done <"$mdir/modules.softdep"

# resolve NAME: sets REPLY to the module providing NAME (a module name or an
# alias), or to "" when it is built in. Among several providers the *_generic
# one wins: e.g. crc32c-intel fails without SSE4.2 (the default TCG CPU).
resolve() {
	local n=${1//-/_} c
	local -a cands
	REPLY=
	if [[ -n ${is_builtin[$n]:-} || -n ${builtin_alias[$n]:-} ]]; then return 0; fi
	if [[ -n ${mod_path[$n]:-} ]]; then
		REPLY=$n
		return 0
	fi
	mapfile -t cands < <(awk -v a="$n" '$1 == "alias" { x = $2; gsub(/-/, "_", x); if (x == a) print $3 }' \
		"$mdir/modules.alias")
	((${#cands[@]})) || return 1
	REPLY=${cands[0]//-/_}
	for c in "${cands[@]}"; do
		[[ $c == *_generic ]] && REPLY=${c//-/_}
	done
	[[ -n ${mod_path[$REPLY]:-} ]]
}

order=()
# soft NAME OF: visit the module behind softdep NAME of module OF, if any.
soft() {
	if ! resolve "$1"; then
		say "warning: softdep $1 of $2 not found, skipped"
	elif [[ -n $REPLY ]]; then
		visit "$REPLY"
	fi
}

# visit MODULE: append MODULE to order after its soft pre-deps and hard deps.
visit() {
	local m=$1 d
	[[ -z ${state[$m]:-} ]] || return 0
	state[$m]=seen
	for d in ${soft_pre[$m]:-}; do soft "$d" "$m"; done
	for d in ${mod_deps[$m]}; do
		modname "$d"
		visit "$REPLY"
	done
	order+=("${mod_path[$m]}")
	for d in ${soft_post[$m]:-}; do soft "$d" "$m"; done
	return 0
}

for w in "${wanted_modules[@]}"; do
	resolve "$w" || die "module $w not found in $kver"
	if [[ -n $REPLY ]]; then visit "$REPLY"; else say "$w is built in"; fi
done

# --- initramfs ----------------------------------------------------------------

socat=$(command -v socat) || die "socat is missing"

initrd=$cache/initramfs.cpio.gz
inputs=$(
	{
		echo "layout $layout kernel $pkg $ver $kver"
		sha256sum <"$init_src"
		sha256sum <"$up_src"
		sha256sum <"$busybox"
		sha256sum <"$socat"
		printf '%s\n' "${order[@]}"
	} | sha256sum | cut -d' ' -f1
)
if [[ -f $initrd && "$(cat "$initrd.inputs" 2>/dev/null)" == "$inputs" ]]; then
	say "initramfs up to date (${#order[@]} modules)"
else
	say "building initramfs (${#order[@]} modules)"
	stage=$(mktemp -d "$cache/.initramfs.XXXXXX")
	tmpdirs+=("$stage")
	mkdir -p "$stage"/{bin,dev,proc,sys,run,tmp,mnt,etc/mvtest}
	cp "$busybox" "$stage/bin/busybox"
	for applet in $("$busybox" --list); do
		[[ $applet == busybox ]] || ln -s busybox "$stage/bin/$applet"
	done
	install -m 0755 "$init_src" "$stage/init"
	install -m 0755 "$up_src" "$stage/bin/microvm-up"
	# socat for the vsock scenarios (busybox has no vsock), with the libraries it links.
	cp "$socat" "$stage/bin/socat"
	while read -r lib; do
		mkdir -p "$stage${lib%/*}"
		cp -L "$lib" "$stage$lib"
	done < <(ldd "$socat" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
	for p in "${order[@]}"; do
		dst=lib/modules/$kver/${p%%.ko*}.ko
		mkdir -p "$stage/${dst%/*}"
		case $p in
		*.ko) cp "$mdir/$p" "$stage/$dst" ;;
		*.ko.xz) xz -dc "$mdir/$p" >"$stage/$dst" ;;
		*.ko.zst) zstd -qdc "$mdir/$p" >"$stage/$dst" ;;
		*.ko.gz) gzip -dc "$mdir/$p" >"$stage/$dst" ;;
		*) die "unexpected module file $p" ;;
		esac
		echo "/$dst" >>"$stage/etc/mvtest/modules"
	done
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
		gzip -6 -n >"$initrd.tmp" || die "cannot write $initrd"
	mv "$initrd.tmp" "$initrd"
	echo "$inputs" >"$initrd.inputs"
fi

# --- ELF kernel and store disk for the real-VMM tier --------------------------

# firecracker and cloud-hypervisor boot an uncompressed ELF vmlinux (with its PVH note), which
# is the bzImage's payload: setup_sects at 0x1f1, payload_offset and payload_length at 0x248.
vmlinux=$cache/vmlinux-$kver
if [[ ! -s $vmlinux ]]; then
	say "extracting vmlinux from $vmlinuz"
	le32() { od -An -tu4 -j "$1" -N4 "$vmlinuz" | tr -d ' '; }
	setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$vmlinuz" | tr -d ' ')
	((setup_sects)) || setup_sects=4
	start=$(((setup_sects + 1) * 512 + $(le32 $((0x248)))))
	length=$(le32 $((0x24c)))
	# The kernel build appends the uncompressed size to an xz or zstd stream.
	case $(od -An -tx1 -j "$start" -N2 "$vmlinuz" | tr -d ' ') in
	fd37) decompress=(xz -dc --single-stream) ;;
	28b5) decompress=(zstd -dcq) length=$((length - 4)) ;;
	1f8b) decompress=(gzip -dc) ;;
	*) die "unknown compression of the payload of $vmlinuz" ;;
	esac
	dd if="$vmlinuz" iflag=skip_bytes,count_bytes skip="$start" count="$length" status=none |
		"${decompress[@]}" >"$vmlinux.tmp" ||
		die "cannot decompress the payload of $vmlinuz"
	[[ $(head -c 4 "$vmlinux.tmp" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] ||
		die "the payload of $vmlinuz is not an ELF file"
	mv "$vmlinux.tmp" "$vmlinux"
fi

# A small erofs image standing in for a VM's store disk.
store_disk=$cache/store.erofs
if [[ ! -s $store_disk ]]; then
	stage=$(mktemp -d "$cache/.store.XXXXXX")
	tmpdirs+=("$stage")
	echo "a stand-in store disk" >"$stage/README"
	mkfs.erofs "$store_disk.tmp" "$stage" >/dev/null || die "mkfs.erofs failed"
	mv "$store_disk.tmp" "$store_disk"
fi

# --- virtiofsd ----------------------------------------------------------------

virtiofsd=$cache/virtiofsd/bin/virtiofsd
if ((with_virtiofsd)) && [[ ! -x $virtiofsd ]]; then
	cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
	[[ -x $cargo ]] || die "cargo not found; install Rust or pass --no-virtiofsd"
	say "cargo install virtiofsd (takes about a minute)"
	"$cargo" install virtiofsd --locked --quiet --root "$cache/virtiofsd" >&2 ||
		die "cargo install virtiofsd failed"
fi
[[ -x $virtiofsd ]] || virtiofsd=

# --- vhost-device-vsock ---------------------------------------------------------

# A vhost-user vsock device for qemu: this host has no /dev/vhost-vsock.
vhost_vsock=$cache/vhost-device-vsock/bin/vhost-device-vsock
if ((with_virtiofsd)) && [[ ! -x $vhost_vsock ]]; then
	cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
	[[ -x $cargo ]] || die "cargo not found; install Rust or pass --no-virtiofsd"
	say "cargo install vhost-device-vsock (takes a few minutes)"
	"$cargo" install vhost-device-vsock --locked --quiet --root "$cache/vhost-device-vsock" >&2 ||
		die "cargo install vhost-device-vsock failed"
fi
[[ -x $vhost_vsock ]] || vhost_vsock=

# --- env file -----------------------------------------------------------------

tsc_khz=$(awk -F: '/^cpu MHz/ { printf "%d\n", $2 * 1000; exit }' /proc/cpuinfo)
[[ $tsc_khz =~ ^[1-9][0-9]*$ ]] || die "cannot read 'cpu MHz' from /proc/cpuinfo"

{
	printf 'MICROVM_TEST_KERNEL=%q\n' "$vmlinuz"
	printf 'MICROVM_TEST_INITRD=%q\n' "$initrd"
	printf 'MICROVM_TEST_VIRTIOFSD=%q\n' "$virtiofsd"
	printf 'MICROVM_TEST_VHOST_VSOCK=%q\n' "$vhost_vsock"
	printf 'MICROVM_TEST_TSC_KHZ=%q\n' "$tsc_khz"
	printf 'MICROVM_TEST_VMLINUX=%q\n' "$vmlinux"
	printf 'MICROVM_TEST_STORE_DISK=%q\n' "$store_disk"
} >"$cache/env.tmp"
mv "$cache/env.tmp" "$cache/env"
echo "$cache/env"
