{% include "common/header.sh" %}
{%- if host_os %}
case $OSTYPE in
{%- for os in host_os %}
  {{ os }}*) ;;
{%- endfor %}
  *)
    echo 'microvm-run:' {{ hypervisor }} 'runs only on' {% for os in host_os %}{% if not loop.first %} or {% endif %}{{ os }}{% endfor %} "hosts, not on $OSTYPE" >&2
    exit 1
    ;;
esac
{%- endif %}
{%- for step in launch.steps %}
{%- if step.kind == "terminal" %}

# {{ hypervisor }}'s console is stdio, which needs a terminal: without one (a service has none),
# this script runs itself again on a pseudo-terminal, whose output reaches stdout.
if [ ! -t 0 ]; then
  SHELL={{ tools.bash }} exec {{ tools.script }} -qefc "$(printf '%q ' "$0" "$@")" /dev/null
fi
{%- endif %}
{%- endfor %}
{%- if uses_runner_dir %}

# The runner's own directory, for the files it ships.
runner=$(cd -P -- "${BASH_SOURCE[0]%/*}/.." && pwd)
{%- endif %}
{%- for requirement in launch.requirements %}
{%- if requirement.read_write %}
if [ ! -r {{ requirement.path }} ] || [ ! -w {{ requirement.path }} ]; then
{%- else %}
if [ ! -e {{ requirement.path }} ]; then
{%- endif %}
  echo {{ requirement.message }} >&2
  exit 1
fi
{%- endfor %}
{%- if pre_start %}

# microvm.preStart, as written in the VM's configuration:
{{ pre_start | safe }}
{%- endif %}
{%- if launch.steps %}
{% for step in launch.steps %}
{%- if step.kind == "remove" %}
{{ tools.rm }} -f -- {{ step.path }}
{%- elif step.kind == "make-dir" %}
{{ tools.mkdir }} -p -- {{ step.path }}
{%- elif step.kind == "macvtap-device" %}
{{ step.var | safe }}=/dev/tap$(< /sys/class/net/{{ step.interface }}/ifindex)
{%- elif step.kind == "export" %}
export {{ step.name | safe }}={{ step.value }}
{%- elif step.kind == "check-socket-path" %}
checked_path={{ [step.path] | argv }}
if [ "$(LC_ALL=C; echo "${#checked_path}")" -gt {{ step.max_bytes }} ] || [[ $checked_path == *[%?[:cntrl:]]* ]]; then
  echo {{ step.message }} "(it is $checked_path)" >&2
  exit 1
fi
{%- elif step.kind == "console" %}
# The console: the terminal when there is one, else a pipe copied to stdout (a service's
# stdout is the journal's socket, which the hypervisor cannot open as a file).
if [ -t 0 ]; then
  {{ step.var | safe }}={{ step.terminal }}
else
  exec {console_pipe}> >(exec {{ tools.cat }})
  {{ step.var | safe }}={{ step.piped_prefix }}/proc/self/fd/$console_pipe
fi
{%- elif step.kind == "kernel-flag" %}
# An ELF kernel (vmlinux) and a boot-protocol image (bzImage) are loaded by different flags.
{{ step.var | safe }}={{ step.other }}
if [ "$(LC_ALL=C; IFS= read -r -n 4 -d '' magic <{{ step.kernel }} || true; echo "$magic")" = $'\x7fELF' ]; then
  {{ step.var | safe }}={{ step.elf }}
fi
{%- elif step.kind == "free-huge-pages" %}
# microvm.hugepageMem: the guest's memory comes from the host's reserved huge pages, and a
# hypervisor that finds too few free may fail without saying why.
huge_mib={{ step.mem_mib }} huge_kib=0 huge_total=0 huge_free=0 huge_rsvd=0 huge_surp=0 huge_over=0
while read -r key value _; do
  case $key in
    HugePages_Total:) huge_total=$value ;;
    HugePages_Free:) huge_free=$value ;;
    HugePages_Rsvd:) huge_rsvd=$value ;;
    HugePages_Surp:) huge_surp=$value ;;
    Hugepagesize:) huge_kib=$value ;;
  esac
done </proc/meminfo
if [ -r /proc/sys/vm/nr_overcommit_hugepages ]; then
  read -r huge_over </proc/sys/vm/nr_overcommit_hugepages
fi
if [ "$huge_kib" -eq 0 ]; then
  echo "microvm-run: microvm.hugepageMem = true asks for huge pages, which this host's kernel does not offer (no Hugepagesize in /proc/meminfo); set hugepageMem = false." >&2
  exit 1
fi
huge_needed=$(((huge_mib * 1024 + huge_kib - 1) / huge_kib))
huge_usable=$((huge_free - huge_rsvd + (huge_over > huge_surp ? huge_over - huge_surp : 0)))
if [ "$huge_usable" -lt "$huge_needed" ]; then
  huge_reserve=$((huge_total + huge_needed - huge_usable))
  echo "microvm-run: microvm.hugepageMem = true needs $huge_needed free huge pages of $huge_kib kB for the guest's $huge_mib MiB, but $huge_usable are free. Reserve them before the VM starts: echo $huge_reserve > /proc/sys/vm/nr_hugepages (as root: the pages reserved now plus the missing ones), or at the host's boot with boot.kernelParams = [ \"hugepages=$huge_reserve\" ]; or set hugepageMem = false." >&2
  exit 1
fi
{%- elif step.kind == "require-var" %}
required_var={{ step.var }}
if [ -z "${!required_var:-}" ]; then
  echo {{ step.message }} >&2
  exit 1
fi
{%- elif step.kind == "require-help-flag" %}
# A flag only some builds of the hypervisor have, which the others refuse as unknown without
# saying which build is needed: this one's --help must list it.
flag_help=$({{ step.program }} --help 2>&1 || true)
if [[ ! $flag_help =~ (^|[[:space:]]){{ step.flag }}([[:space:]=]|$) ]]; then
  echo {{ step.message }} >&2
  exit 1
fi
{%- elif step.kind == "background" %}
{{ step.argv | argv }} &
waited=0
until [ -S {{ step.socket }} ]; do
  if [ "$waited" -ge 300 ]; then
    echo 'microvm-run: the helper did not create' {{ step.socket }} 'within 30 s' >&2
    exit 1
  fi
  {{ tools.sleep }} 0.1
  waited=$((waited + 1))
done
{%- endif %}
{%- endfor %}
{%- endif %}
{%- if ephemeral_images %}

# Ephemeral volumes: what the last run left (a stop that never ran microvm-discard, or a
# crash) is removed, so every start is a clean machine.
{%- for image in ephemeral_images %}
{{ tools.rm }} -f -- {{ image }} {{ image ~ ".microvm-partial" }}
{%- endfor %}
{%- endif %}
{%- if contents_volumes %}

# Images holding a host file's bytes (a secret read at start), readable by the VM's user alone
# and padded to whole sectors; a half-made image never takes the real name.
copy_contents() {
  local image=$1 source=$2
  case $image in -*) image=./$image ;; esac
  local partial="$image.microvm-partial"
  if ! (
    umask 077
    {{ tools.cat }} -- "$source" >"$partial"
  ); then
    {{ tools.rm }} -f -- "$partial"
    echo "microvm-run: cannot read $source, the contents of the volume $image (a host unit's credential exists only while the unit runs)" >&2
    exit 1
  fi
  {{ tools.truncate }} -s %512 -- "$partial"
  {{ tools.ln }} -T -- "$partial" "$image"
  {{ tools.rm }} -f -- "$partial"
}
{% for volume in contents_volumes %}
copy_contents {{ volume.image }} {{ volume.source }}
{%- endfor %}
{%- endif %}
{%- if volumes %}

# Creates a volume image that does not exist yet. An existing file, even an empty or
# unreadable one, is never touched; a half-made image never takes the real name.
create_volume() {
  local image=$1 size_mib=$2
  shift 2
  case $image in -*) image=./$image ;; esac
  if [ -e "$image" ] || [ -L "$image" ]; then
    return 0
  fi
  local partial="$image.microvm-partial"
  echo "microvm-run: creating volume $image ($size_mib MiB)" >&2
  if [[ $image == */* ]]; then
    {{ tools.mkdir }} -p -- "${image%/*}"
  fi
  {{ tools.rm }} -f -- "$partial"
  : >"$partial"
{%- if tools.chattr %}
  # No copy-on-write on btrfs: the guest's filesystem does its own journalling.
  {{ tools.chattr }} +C -- "$partial" 2>/dev/null || true
{%- endif %}
  {{ tools.truncate }} -s "${size_mib}M" -- "$partial"
  "$@" "$partial" >&2
  {{ tools.ln }} -T -- "$partial" "$image"
  {{ tools.rm }} -f -- "$partial"
}
{% for volume in volumes %}
create_volume {{ volume.image }} {{ volume.size }} {{ volume.mkfs }} {{ volume.mkfs_args | argv }}
{%- endfor %}
{%- endif %}
{%- for macvtap in launch.macvtap_fds %}
{% if loop.first %}
{% endif -%}
if [ ! -e /sys/class/net/{{ macvtap.interface }}/ifindex ]; then
  echo 'microvm-run: the macvtap interface' {{ macvtap.interface }} 'does not exist; run bin/macvtap-up first' >&2
  exit 1
fi
macvtap_device=/dev/tap$(< /sys/class/net/{{ macvtap.interface }}/ifindex)
{%- for fd in macvtap.fds %}
exec {{ fd }}<>"$macvtap_device"
{%- endfor %}
{%- endfor %}
{%- if notify_bridge %}

# microvm.readiness: started by systemd (a Type=notify unit sets NOTIFY_SOCKET), the bridge
# carries the guest's READY=1 and health checks from its vsock to the unit.
if [ -n "${NOTIFY_SOCKET:-}" ]; then
  {{ notify_bridge.argv | argv }} &
{%- if notify_bridge.socket %}
  waited=0
  until [ -S {{ notify_bridge.socket }} ]; do
    if [ "$waited" -ge 300 ]; then
      echo 'microvm-run: microvm-notify-bridge did not create' {{ notify_bridge.socket }} 'within 30 s' >&2
      exit 1
    fi
    {{ tools.sleep }} 0.1
    waited=$((waited + 1))
  done
{%- endif %}
fi
{%- endif %}
{%- if extra_args_script %}

# microvm.extraArgsScript, as written in the VM's configuration; its output becomes arguments.
extra_args_output=$({{ extra_args_script | safe }})
extra_args=()
read -r -d '' -a extra_args <<<"$extra_args_output" || true
{%- else %}
extra_args=()
{%- endif %}

exec {% if procname %}-a {{ procname }} {% endif %}{{ launch.program }} \
  {{ launch.args | argv(multiline=true) }} \
  "${extra_args[@]}"{% if launch.after_extra_args %} \
  {{ launch.after_extra_args | argv }}{% endif %}
