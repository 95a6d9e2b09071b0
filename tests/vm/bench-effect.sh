#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The effect benchmark: does cgqos protect interactive work? In the x86_64 guest (4 vCPUs)
# a latency probe (sleeps a fixed interval, then does a fixed "frame" of work, and records
# how late it woke and how long the frame took) runs three times in the same boot:
#   unloaded      the probe alone, in chrome/foreground/urgent
#   flat          with CPU hogs (2 per vCPU), everything in one plain cgroup
#   cgqos         hogs in chrome/background/non-urgent, probe in chrome/foreground/urgent
# and prints p50 / p99 / max of each, plus ratios against "unloaded" measured in the same
# boot. Absolute times under TCG (software emulation) are inflated; read the ratios.
#   tests/vm/bench-effect.sh [--samples N] [--interval-us N] [--work-us N] [--bins DIR]
set -uo pipefail

VM_PROG=cgqos-bench-effect
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

samples=500 interval=4000 work=1000 bins="" smp=4 tcg_thread=single
while [[ $# -gt 0 ]]; do
	case $1 in
	--samples) samples=$2; shift 2 ;;
	--interval-us) interval=$2; shift 2 ;;
	--work-us) work=$2; shift 2 ;;
	--bins) bins=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--tcg-thread) tcg_thread=$2; shift 2 ;;
	-h | --help) sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) vm_die 2 "unknown option $1 (see --help)" ;;
	esac
done

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/cgqos-bench-effect.XXXXXX") || vm_die 125 "no work directory"
trap 'rm -rf "$work_dir"' EXIT
payload=$work_dir/payload
mkdir -p "$payload"
if [[ -n $bins ]]; then
	cp -a "$bins/." "$payload/"
else
	"$HERE/build.sh" x86_64 "$payload" >&2 || vm_die 125 "build failed"
fi

# The guest side: plain busybox sh, parameters substituted here.
cat >"$payload/vmtest.sh" <<GUEST
#!/bin/sh
CG=/sys/fs/cgroup
P="/vmtest/latency_probe --samples $samples --interval-us $interval --work-us $work"
/vmtest/cgqos setup >/dev/null 2>&1 || { echo "setup failed"; exit 1; }
in_fg_urgent='/vmtest/cgqos move \$\$ foreground >/dev/null && /vmtest/cgqos move --thread \$\$ urgent >/dev/null'
in_flat='echo \$\$ >/sys/fs/cgroup/flat/cgroup.procs'
# probe PLACE: the probe's shell places itself, then becomes the probe.
probe() { sh -c "\$1; exec \$P"; }

echo "BENCH unloaded \$(probe "\$in_fg_urgent")"

mkdir -p \$CG/flat
/vmtest/threads $((smp * 2)) --spin >/tmp/hogs.out &
hogs=\$!
sleep 0.5
echo \$hogs >\$CG/flat/cgroup.procs
echo "BENCH flat \$(probe "\$in_flat")"

/vmtest/cgqos move \$hogs background >/dev/null
for t in \$(sed -n 's/^pid [0-9]* tids //p' /tmp/hogs.out); do
	/vmtest/cgqos move --thread \$t non-urgent >/dev/null
done
echo "BENCH cgqos \$(probe "\$in_fg_urgent")"
kill \$hogs
/vmtest/cgqos teardown >/dev/null 2>&1
rmdir \$CG/flat
GUEST

log=$work_dir/console.log
"$HERE/run.sh" --arch x86_64 --smp "$smp" --tcg-thread "$tcg_thread" --timeout 600 "$payload" >"$log" 2>&1
rc=$?
if ((rc != 0)) || ! grep -q '^BENCH cgqos' "$log"; then
	cat "$log" >&2
	vm_die 1 "the benchmark boot failed (run.sh status $rc)"
fi

get() { # ROW KEY
	sed -n "s/^BENCH $1 .*[ ]$2=\([0-9]*\).*/\1/p" "$log" | head -n1
}
accel=$(sed -n 's/.*booting .* (\([a-z]*\), .*/\1/p' "$log" | head -n1)
kernel=$(sed -n 's/.*booting \([^ ]*\) on .*/\1/p' "$log" | head -n1)
echo "effect benchmark: x86_64 guest, $smp vCPUs, kernel $kernel, accelerator ${accel:-unknown} (TCG threads: $tcg_thread)"
echo "probe: $samples samples, sleep $interval us then $work us of work; $((smp * 2)) spinning hog threads when loaded"
printf '%-10s %10s %10s %10s %12s %12s %12s\n' row wake_p50 wake_p99 wake_max frame_p50 frame_p99 frame_max
for r in unloaded flat cgqos; do
	printf '%-10s %10s %10s %10s %12s %12s %12s\n' "$r" \
		"$(get $r wake_late_p50_us)" "$(get $r wake_late_p99_us)" "$(get $r wake_late_max_us)" \
		"$(get $r frame_p50_us)" "$(get $r frame_p99_us)" "$(get $r frame_max_us)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
for r in flat cgqos; do
	echo "$r / unloaded: wake p50 x$(ratio "$(get $r wake_late_p50_us)" "$(get unloaded wake_late_p50_us)"), wake p99 x$(ratio "$(get $r wake_late_p99_us)" "$(get unloaded wake_late_p99_us)"), frame p99 x$(ratio "$(get $r frame_p99_us)" "$(get unloaded frame_p99_us)")"
done
echo "(times in microseconds; frame = wake lateness + time to finish the work)"
