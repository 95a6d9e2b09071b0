#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Boot a Debian kernel in QEMU with a busybox initramfs, run a payload inside and exit with its
# status. See docs/testing.md, section "Real-kernel tests".
set -uo pipefail

VM_PROG=cgqos-vm
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

usage() {
	cat <<'EOF'
usage: tests/vm/run.sh [OPTIONS] PAYLOAD [ARGS...]
       tests/vm/run.sh [OPTIONS] --prefetch

Boots a Debian kernel under QEMU with a busybox initramfs and runs PAYLOAD in it:
a static binary (run as /vmtest/NAME ARGS...) or a directory (copied to /vmtest, where
`sh vmtest.sh ARGS...` runs). Exits with the payload's status, 124 on timeout, 125 when the
harness or the boot fails.

options:
  --arch x86_64|arm64        guest architecture (default x86_64; amd64/aarch64 also accepted)
  --capacities LIST          arm64 only: per-CPU capacity-dmips-mhz, e.g. 512,512,1024,1024
                             (big.LITTLE); sets --smp to the number of entries
  --smp N                    vCPUs (default 4)
  --mem MB                   memory (default 1024)
  --append ARGS              extra kernel command-line arguments (repeatable)
  --env NAME=VALUE           export NAME=VALUE for the payload (repeatable)
  --timeout SECS             whole-run limit (default 300); exit 124 when reached
  --accel auto|kvm|tcg       accelerator (default auto: KVM only if usable, else TCG)
  --tcg-thread single|multi  TCG thread mode (default single)
  --kernel-package SPEC      Debian kernel package, NAME[/SUITE][=VERSION] (default: the pinned
                             trixie-backports 6.18.15 cloud-amd64 / arm64 kernel)
  --kernel FILE              boot this kernel image instead (no config check)
  --cpu MODEL                QEMU CPU model (default max for x86_64 TCG, cortex-a72 for arm64)
  --script NAME              directory payload: script to run instead of vmtest.sh
  --log FILE                 also write the guest console to FILE
  --prefetch                 only fill the cache (kernel, busybox, dtb); no boot
  --verbose                  show kernel messages (no `quiet`), QEMU command line, apt output
  --keep                     keep the work directory (initramfs, console log)
  -h, --help                 this help

environment: CGQOS_VM_CACHE (cache dir, default /var/cache/cgqos-vm),
  CGQOS_VM_DEBIAN_MIRROR (Debian mirror for guest packages, default: the host's).
EOF
}

arch=x86_64 capacities="" smp="" mem=1024 append="" timeout=300 accel=auto tcg_thread=single
kernel_pkg="" kernel_file="" cpu="" script=vmtest.sh logfile="" prefetch=0 keep=0
envs=()

need_arg() { [[ $# -ge 2 ]] || vm_die 125 "option $1 needs an argument (see --help)"; }
while [[ $# -gt 0 ]]; do
	opt=$1
	if [[ $opt == --*=* ]]; then
		set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
		opt=$1
	fi
	case $opt in
	--arch) need_arg "$@"; arch=$2; shift 2 ;;
	--capacities) need_arg "$@"; capacities=$2; shift 2 ;;
	--smp) need_arg "$@"; smp=$2; shift 2 ;;
	--mem) need_arg "$@"; mem=$2; shift 2 ;;
	--append) need_arg "$@"; append+=" $2"; shift 2 ;;
	--env) need_arg "$@"; envs+=("$2"); shift 2 ;;
	--timeout) need_arg "$@"; timeout=$2; shift 2 ;;
	--accel) need_arg "$@"; accel=$2; shift 2 ;;
	--tcg-thread) need_arg "$@"; tcg_thread=$2; shift 2 ;;
	--kernel-package) need_arg "$@"; kernel_pkg=$2; shift 2 ;;
	--kernel) need_arg "$@"; kernel_file=$2; shift 2 ;;
	--cpu) need_arg "$@"; cpu=$2; shift 2 ;;
	--script) need_arg "$@"; script=$2; shift 2 ;;
	--log) need_arg "$@"; logfile=$2; shift 2 ;;
	--prefetch) prefetch=1; shift ;;
	--verbose | -v) VM_VERBOSE=1; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	-*) vm_die 125 "unknown option $opt (see --help)" ;;
	*) break ;;
	esac
done

# Checks and per-architecture settings ------------------------------------------------------

case $arch in
x86_64 | amd64) arch=x86_64 ;;
arm64 | aarch64) arch=arm64 ;;
*) vm_die 125 "unknown --arch $arch (x86_64 or arm64)" ;;
esac
[[ $accel =~ ^(auto|kvm|tcg)$ ]] || vm_die 125 "--accel must be auto, kvm or tcg"
[[ $tcg_thread =~ ^(single|multi)$ ]] || vm_die 125 "--tcg-thread must be single or multi"
[[ $timeout =~ ^[0-9]+$ && $timeout -gt 0 ]] || vm_die 125 "--timeout must be a positive number of seconds"
[[ $mem =~ ^[0-9]+$ ]] || vm_die 125 "--mem must be a number of MiB"
caps=()
if [[ -n $capacities ]]; then
	[[ $arch == arm64 ]] || vm_die 125 "--capacities needs --arch arm64"
	IFS=, read -r -a caps <<<"$capacities"
	for c in "${caps[@]}"; do
		[[ $c =~ ^[0-9]+$ && $c -gt 0 ]] || vm_die 125 "bad capacity '$c' in --capacities $capacities"
	done
	if [[ -n $smp && $smp != "${#caps[@]}" ]]; then
		vm_die 125 "--smp $smp does not match the ${#caps[@]} entries of --capacities"
	fi
	smp=${#caps[@]}
fi
smp=${smp:-4}
[[ $smp =~ ^[0-9]+$ && $smp -ge 1 ]] || vm_die 125 "--smp must be a positive number"
for e in "${envs[@]}"; do
	[[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || vm_die 125 "--env wants NAME=VALUE, got '$e'"
done

host_arch=$(uname -m)
if [[ $arch == x86_64 ]]; then
	qemu=qemu-system-x86_64 qemu_pkg=qemu-system-x86 debarch=amd64 console=ttyS0 machine=pc
	default_kernel=linux-image-6.18.15+deb13-cloud-amd64 fallback_kernel=linux-image-cloud-amd64
	native=$([[ $host_arch == x86_64 ]] && echo 1 || echo 0)
	tcg_cpu=max
else
	qemu=qemu-system-aarch64 qemu_pkg=qemu-system-arm debarch=arm64 console=ttyAMA0 machine=virt
	default_kernel=linux-image-6.18.15+deb13-arm64 fallback_kernel=linux-image-arm64
	native=$([[ $host_arch == aarch64 ]] && echo 1 || echo 0)
	tcg_cpu=cortex-a72
fi

if ((prefetch == 0)); then
	[[ $# -ge 1 ]] || { usage >&2; exit 125; }
	payload=$1
	shift
	[[ -e $payload ]] || vm_die 125 "payload $payload does not exist"
	if [[ -d $payload ]]; then
		[[ -f $payload/$script ]] || vm_die 125 "directory payload $payload has no $script"
	elif [[ ! -f $payload ]]; then
		vm_die 125 "payload $payload is neither a file nor a directory"
	fi
fi

# Host tools, kernel, busybox, dtb ------------------------------------------------------------

host_pkgs=("$qemu_pkg" cpio)
((${#caps[@]})) && host_pkgs+=(device-tree-compiler)
vm_ensure_host_pkgs "${host_pkgs[@]}"

if [[ -n $kernel_file ]]; then
	[[ -f $kernel_file ]] || vm_die 125 "kernel $kernel_file does not exist"
	kernel=$kernel_file
	kernel_name=$kernel_file
else
	if [[ -n $kernel_pkg ]]; then
		vm_fetch_kernel "$kernel_pkg" "$debarch"
	else
		vm_fetch_kernel "$default_kernel" "$debarch" "$fallback_kernel"
	fi
	kernel=$VM_KERNEL_DIR/vmlinuz
	kernel_name=${VM_KERNEL_DIR##*/}
	vm_check_kernel_config "$VM_KERNEL_DIR/config"
fi
vm_fetch_busybox "$debarch"

# Accelerator: KVM only if it can work here (see docs/testing.md).
kvm_usable() {
	if ((native == 0)); then
		kvm_why="guest arch $arch differs from host arch $host_arch"
	elif [[ -e /sys/module/kvm_pvm ]]; then
		kvm_why="/dev/kvm is PVM (kvm_pvm), which cannot run stock kernels"
	elif [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
		kvm_why="/dev/kvm is missing or not read/write"
	else
		return 0
	fi
	return 1
}
kvm_why=""
case $accel in
auto) if kvm_usable; then accel=kvm; else accel=tcg; vm_debug "using TCG: $kvm_why"; fi ;;
kvm) if ((native == 0)); then vm_warn "KVM cannot run a $arch guest on $host_arch; using TCG"; accel=tcg; fi ;;
esac

accel_args() { # $1 = kvm|tcg
	if [[ $1 == kvm ]]; then
		printf '%s\n' -accel kvm -cpu "${cpu:-host}"
	else
		printf '%s\n' -accel "tcg,thread=$tcg_thread" -cpu "${cpu:-$tcg_cpu}"
	fi
}

dtb=""
if ((${#caps[@]})); then
	qemu_version=$("$qemu" --version | head -n1)
	dtb_key=$(printf '%s|' "$qemu_version" "$machine" "${cpu:-$tcg_cpu}" "$accel" "$smp" "$mem" "$capacities" | sha256sum)
	dtb=$VM_CACHE/dtb/${dtb_key:0:16}.dtb
	if [[ ! -f $dtb ]]; then
		vm_cache_lock guest
		mkdir -p "$VM_CACHE/dtb"
		rm -f "$VM_CACHE/dtb"/.new.*
		tmpdtb=$(mktemp "$VM_CACHE/dtb/.new.XXXXXX")
		mapfile -t aa < <(accel_args "$accel")
		"$qemu" -machine "$machine,dumpdtb=$tmpdtb" "${aa[@]}" -smp "$smp" -m "$mem" \
			-nodefaults -no-user-config -display none >/dev/null 2>&1 ||
			vm_die 125 "$qemu could not dump its device tree"
		fdtput -r "$tmpdtb" /cpus/cpu-map 2>/dev/null
		fdtput -c "$tmpdtb" /cpus/cpu-map /cpus/cpu-map/socket0 || vm_die 125 "fdtput failed on $tmpdtb"
		cluster=-1 corei=0 prev=""
		for ((i = 0; i < smp; i++)); do
			node=/cpus/cpu@$i
			fdtget "$tmpdtb" "$node" reg >/dev/null 2>&1 || vm_die 125 "no $node in QEMU's device tree"
			fdtput -t u "$tmpdtb" "$node" capacity-dmips-mhz "${caps[i]}"
			phandle=$(fdtget -t u "$tmpdtb" "$node" phandle 2>/dev/null) ||
				vm_die 125 "$node has no phandle in QEMU's device tree"
			if [[ ${caps[i]} != "$prev" ]]; then
				cluster=$((cluster + 1)) corei=0 prev=${caps[i]}
				fdtput -c "$tmpdtb" "/cpus/cpu-map/socket0/cluster$cluster"
			fi
			fdtput -c "$tmpdtb" "/cpus/cpu-map/socket0/cluster$cluster/core$corei"
			fdtput -t u "$tmpdtb" "/cpus/cpu-map/socket0/cluster$cluster/core$corei" cpu "$phandle"
			corei=$((corei + 1))
		done
		mv "$tmpdtb" "$dtb"
		vm_debug "patched device tree $dtb"
	fi
fi
vm_cache_unlock

if ((prefetch)); then
	vm_log "cache ready: kernel $kernel_name, busybox $VM_BUSYBOX${dtb:+, dtb $dtb}"
	exit 0
fi

# Initramfs -----------------------------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/cgqos-vm.XXXXXX") || vm_die 125 "cannot create a work directory"
qpid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [[ -n $qpid ]]; then kill "$qpid" 2>/dev/null; fi
	if ((keep)); then vm_log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'vm_log "interrupted"; exit 130' INT TERM

root=$work/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,vmtest}
cp "$VM_BUSYBOX" "$root/bin/busybox"
if [[ -d $payload ]]; then
	cp -a "$payload/." "$root/vmtest/"
	run_cmd="sh ./$(vm_shquote "$script")"
else
	cp "$payload" "$root/vmtest/"
	chmod +x "$root/vmtest/${payload##*/}"
	run_cmd="./$(vm_shquote "${payload##*/}")"
fi
for a in "$@"; do run_cmd+=" $(vm_shquote "$a")"; done
env_lines=""
for e in "${envs[@]}"; do env_lines+="export ${e%%=*}=$(vm_shquote "${e#*=}")"$'\n'; done

cat >"$root/init" <<EOF
#!/bin/busybox sh
# Generated by tests/vm/run.sh.
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=dumb NO_COLOR=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
$env_lines
read -r up _ </proc/uptime
echo "VMTEST-BOOTED uptime=\$up kernel=\$(uname -r) cpus=\$(nproc)"
cd /vmtest
$run_cmd
echo "VMTEST-EXIT \$?"
poweroff -f
reboot -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$work/initrd.cpio" ||
	vm_die 125 "cpio failed"

# Boot ----------------------------------------------------------------------------------------

cmdline="console=$console panic=-1 cgroup_no_v1=all"
((VM_VERBOSE)) || cmdline+=" quiet"
cmdline+=$append

deadline=$((SECONDS + timeout))
start=$SECONDS
guest_rc="" booted=0 outcome=""

# boot ACCEL: sets outcome to exit|eof|timeout|kvmfail and guest_rc.
boot() {
	local acc=$1 aa fifo line cfd status t kill_at=""
	mapfile -t aa < <(accel_args "$acc")
	local cmd=("$qemu" -machine "$machine" "${aa[@]}" -smp "$smp" -m "$mem"
		-nodefaults -no-user-config -display none -no-reboot -serial stdio
		-kernel "$kernel" -initrd "$work/initrd.cpio" -append "$cmdline")
	[[ -n $dtb ]] && cmd+=(-dtb "$dtb")
	vm_log "booting $kernel_name on $arch ($acc, ${smp} vCPUs${capacities:+, capacities $capacities})"
	vm_debug "command: ${cmd[*]}"
	fifo=$work/console.fifo
	rm -f "$fifo"
	mkfifo "$fifo"
	"${cmd[@]}" </dev/null >"$fifo" 2>&1 &
	qpid=$!
	exec {cfd}<"$fifo"
	booted=0 guest_rc="" outcome=""
	while :; do
		t=$((deadline - SECONDS))
		if [[ -n $kill_at ]]; then t=$((kill_at - SECONDS)); fi
		if ((t <= 0)); then
			if [[ -n $kill_at ]]; then outcome="exit"; else outcome="timeout"; fi
			break
		fi
		line=""
		IFS= read -r -t "$t" -u "$cfd" line
		status=$?
		if ((status > 128)); then
			continue
		fi
		if ((status != 0)) && [[ -z $line ]]; then
			outcome=${outcome:-eof}
			break
		fi
		line=${line//$'\r'/}
		printf '%s\n' "$line"
		printf '%s\n' "$line" >>"$work/console.log"
		case $line in
		*VMTEST-BOOTED*) booted=1 ;;
		*VMTEST-EXIT\ *)
			t=${line##*VMTEST-EXIT }
			t=${t%%[!0-9]*}
			if [[ -n $t ]]; then
				guest_rc=$t
				kill_at=$((SECONDS + 15))
			fi
			;;
		*"KVM internal error"* | *"emulation failure"* | *"failed to set MSR"* | *"Could not access KVM"*)
			if [[ $acc == kvm && $booted == 0 ]]; then
				outcome=kvmfail
				break
			fi
			;;
		esac
		((status != 0)) && break
	done
	exec {cfd}<&-
	if [[ -n $guest_rc ]]; then
		outcome="exit"
	fi
	if kill -0 "$qpid" 2>/dev/null; then
		if [[ $outcome != exit ]]; then kill "$qpid" 2>/dev/null; fi
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$qpid" 2>/dev/null || break
			sleep 0.2
		done
		kill -9 "$qpid" 2>/dev/null
	fi
	wait "$qpid" 2>/dev/null
	qemu_rc=$?
	qpid=""
}

: >"$work/console.log"
boot "$accel"
if [[ $outcome == kvmfail ]]; then
	vm_warn "KVM cannot run this guest here; retrying with TCG"
	boot tcg
fi
[[ -n $logfile ]] && cp "$work/console.log" "$logfile"

elapsed=$((SECONDS - start))
case $outcome in
exit)
	vm_debug "guest exited with status $guest_rc after $elapsed s"
	exit "$guest_rc"
	;;
timeout)
	if ((booted)); then
		vm_log "error: timeout: the payload did not finish within $timeout s (guest booted); QEMU killed"
	else
		vm_log "error: timeout: the guest did not boot within $timeout s; QEMU killed"
	fi
	exit 124
	;;
*)
	vm_log "error: the guest ended without a VMTEST-EXIT marker after $elapsed s (QEMU status $qemu_rc; $([[ $booted == 1 ]] && echo "booted, then died" || echo "boot failure"))"
	panic=$(grep -n -m1 -E 'Kernel panic|Oops|BUG:|general protection fault|Unable to handle kernel' "$work/console.log" | cut -d: -f1)
	if [[ -n $panic ]]; then
		vm_log "first panic lines:"
		tail -n "+$panic" "$work/console.log" | head -n 15 | sed 's/^/    /' >&2
	else
		vm_log "last console lines:"
		tail -n 15 "$work/console.log" | sed 's/^/    /' >&2
	fi
	exit 125
	;;
esac
