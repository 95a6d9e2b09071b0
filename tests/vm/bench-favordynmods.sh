#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# What the cgroup2 mount option favordynmods buys and costs, on the real kernel in the
# x86_64 guest (2 vCPUs, multi-threaded TCG). One boot, four phases in this order:
#   off        as booted (the option never set since boot)
#   on         after `mount -o remount,favordynmods`
#   off-again  after a fresh mount without it (6.18 keeps the per-threadgroup locking it
#              turned on; only the global lock's rcu_sync goes back to its fast mode)
#   on-again   remounted with it once more
# Each phase runs ROUNDS rounds of examples/forkbench.rs: an isolated move (a cgroup.procs
# write GAP ms after the last one, so no grace period is shared), back-to-back moves,
# fork+exit+wait and thread start+join. Prints the lowest p50/p90/mean of the rounds per row
# and ratios between phases of the same boot. Absolute times under TCG are inflated (and
# swing with the host's load); read the ratios.
#   tests/vm/bench-favordynmods.sh [--isolated N] [--gap-ms MS] [--burst N] [--forks N]
#                                  [--rounds N] [--bins DIR]
set -uo pipefail

VM_PROG=cgqos-bench-favordynmods
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

isolated=20 gap=100 burst=200 forks=1000 rounds=3 bins="" smp=2
while [[ $# -gt 0 ]]; do
	case $1 in
	--isolated) isolated=$2; shift 2 ;;
	--gap-ms) gap=$2; shift 2 ;;
	--burst) burst=$2; shift 2 ;;
	--forks) forks=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--bins) bins=$2; shift 2 ;;
	-h | --help) sed -n '3,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) vm_die 2 "unknown option $1 (see --help)" ;;
	esac
done
for v in "$isolated" "$gap" "$burst" "$forks" "$rounds"; do
	[[ $v =~ ^[1-9][0-9]*$ ]] || vm_die 2 "counts and --gap-ms must be positive numbers, got '$v'"
done

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/cgqos-bench-favordynmods.XXXXXX") || vm_die 125 "no work directory"
trap 'rm -rf "$work_dir"' EXIT
payload=$work_dir/payload
mkdir -p "$payload"
if [[ -n $bins ]]; then
	cp "$bins/forkbench" "$payload/" || vm_die 125 "no forkbench in $bins"
else
	"$HERE/build.sh" x86_64 "$work_dir/bins" >&2 || vm_die 125 "build failed"
	cp "$work_dir/bins/forkbench" "$payload/"
fi

# The guest side: plain busybox sh, parameters substituted here. busybox's `mount -o
# remount` keeps the options /proc/mounts shows, so "off" again is a fresh mount of the same
# hierarchy (the kernel applies a mount's options to the hierarchy; its groups stay).
cat >"$payload/vmtest.sh" <<GUEST
#!/bin/sh
CG=/sys/fs/cgroup
FB=/vmtest/forkbench
mkdir \$CG/a \$CG/b
\$FB fork 200 >/dev/null # warm up
phase() {
	echo "MOUNT \$1 \$(grep ' /sys/fs/cgroup cgroup2 ' /proc/mounts)"
	for round in $(seq -s ' ' "$rounds"); do
		echo "BENCH \$1 isolated \$(\$FB move \$CG/a \$CG/b $isolated $gap)"
		echo "BENCH \$1 burst \$(\$FB move \$CG/a \$CG/b $burst 0)"
		echo "BENCH \$1 fork \$(\$FB fork $forks)"
		echo "BENCH \$1 threads \$(\$FB threads $forks)"
	done
}
on() { mount -o remount,favordynmods \$CG || { echo "remount with favordynmods failed"; exit 1; }; }
off() { umount \$CG && mount -t cgroup2 cgroup2 \$CG || { echo "mounting without favordynmods failed"; exit 1; }; }
phase off
on
phase on
off
phase off-again
on
phase on-again
dmesg | grep -i favordynmods | sed 's/^/KERNEL /'
rmdir \$CG/a \$CG/b
GUEST

log=$work_dir/console.log
"$HERE/run.sh" --arch x86_64 --smp "$smp" --tcg-thread multi --timeout 900 "$payload" >"$log" 2>&1
rc=$?
if ((rc != 0)) || ! grep -q '^BENCH on-again threads' "$log"; then
	cat "$log" >&2
	vm_die 1 "the benchmark boot failed (run.sh status $rc)"
fi

get() { # PHASE ROW KEY: the lowest of the rounds (load on the host only adds time)
	sed -n "s/^BENCH $1 $2 .*[ ]$3=\([0-9.]*\).*/\1/p" "$log" | sort -g | head -n1
}
accel=$(sed -n 's/.*booting .* (\([a-z]*\), .*/\1/p' "$log" | head -n1)
kernel=$(sed -n 's/.*booting \([^ ]*\) on .*/\1/p' "$log" | head -n1)
echo "favordynmods benchmark: x86_64 guest, $smp vCPUs, kernel $kernel, accelerator ${accel:-unknown} (TCG threads: multi)"
echo "isolated: $isolated moves, $gap ms apart; burst: $burst moves back to back; fork, threads: $forks each; $rounds rounds per phase, the lowest shown"
sed -n 's/^MOUNT \([a-z-]*\) cgroup2 [^ ]* cgroup2 \([^ ]*\).*/mount options (\1): \2/p' "$log"
printf '%-10s %-9s %10s %10s %10s\n' phase row p50_us p90_us mean_us
for p in off on off-again on-again; do
	for r in isolated burst fork threads; do
		printf '%-10s %-9s %10s %10s %10s\n' "$p" "$r" "$(get $p $r p50)" "$(get $p $r p90)" "$(get $p $r mean)"
	done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
for pair in on/off off-again/off on-again/off-again; do
	p=${pair%/*} base=${pair#*/}
	line="$p / $base:"
	for r in isolated burst fork threads; do
		line+=" $r p50 x$(ratio "$(get "$p" $r p50)" "$(get "$base" $r p50)"), mean x$(ratio "$(get "$p" $r mean)" "$(get "$base" $r mean)");"
	done
	echo "${line%;}"
done
sed -n 's/^KERNEL /kernel log: /p' "$log"
echo "(times in microseconds)"
