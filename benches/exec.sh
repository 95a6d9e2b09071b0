#!/usr/bin/env bash
# What `cgqos exec` costs, from the caller's fork to the command's exit, for `true`: started
# with clone3(CLONE_INTO_CGROUP) (born in the group), and with the fallback of kernels before
# 5.7 (cgqos moves itself with a cgroup.procs write, then execs). Runs are spaced (PAUSE
# seconds) as real launches are: a lone cgroup.procs write waits for an RCU grace period,
# back-to-back ones do not (docs/performance.md). Root and a cgroup2 mount needed; works in a
# sub-root of it, removed at the end.
#   benches/exec.sh [CGQOS_BINARY (a debug build: the fallback is forced through its test
#                    hook)] [RUNS] [PAUSE]
set -euo pipefail

bin=${1:-target/debug/cgqos}
runs=${2:-40}
pause=${3:-0.05}
[[ $(id -u) == 0 ]] || { echo "benches/exec.sh: needs root" >&2; exit 2; }
mount=$(awk '$9 == "cgroup2" && $4 == "/" { print $5; exit }' /proc/self/mountinfo)
[[ -n $mount ]] || { echo "benches/exec.sh: no cgroup2 mount" >&2; exit 2; }
root=$mount/cgqos-bench-exec-$$
state=$(mktemp -d)
export CGQOS_SOCKET=/nonexistent/cgqos-bench.sock
cg=(--cgroup-root "$root" --state-dir "$state")
cleanup() {
	"$bin" "${cg[@]}" teardown >/dev/null 2>&1 || true
	rm -rf "$state"
}
trap cleanup EXIT
"$bin" "${cg[@]}" setup >/dev/null

# p50/p90 of the numbers (microseconds) on stdin, as milliseconds.
summary() {
	sort -n | awk -v l="$1" '
		{ v[NR] = $1 }
		END { printf "%-44s p50 %6.2f ms  p90 %6.2f ms  (%d runs)\n", l, v[int(NR*0.5)+1]/1000, v[int(NR*0.9)]/1000, NR }'
}

# measure LABEL ENV...: RUNS timed runs of `cgqos exec background -- true`, caller's view.
measure() {
	local label=$1 t0 t1 i
	shift
	for ((i = 0; i < runs; i++)); do
		sleep "$pause"
		t0=${EPOCHREALTIME/./}
		env "$@" "$bin" "${cg[@]}" exec background -- true
		t1=${EPOCHREALTIME/./}
		echo $((t1 - t0))
	done | summary "$label"
}

# placement LABEL SYSCALL PATTERN ENV...: how long the one system call that places the
# command takes (strace -T): clone3 itself, or the fallback's write of its pid.
placement() {
	local label=$1 call=$2 pattern=$3 i trace
	shift 3
	for ((i = 0; i < runs; i++)); do
		sleep "$pause"
		trace=$(env "$@" strace -T -e trace="$call" "$bin" "${cg[@]}" exec background -- true 2>&1 >/dev/null)
		grep "$pattern" <<<"$trace" | sed -n '1s/.*<\([0-9.]*\)>$/\1/p' | awk '{ printf "%d\n", $1 * 1000000 }'
	done | summary "$label"
}

echo "# $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $bin, pause ${pause}s"
for round in 1 2; do
	measure "exec, clone3 (round $round)" CGQOS_TEST_NO_CLONE3=0
	measure "exec, fallback: move, then exec (round $round)" CGQOS_TEST_NO_CLONE3=1
done
if command -v strace >/dev/null; then
	placement "the clone3 call (fork into the group)" clone3 'clone3(' CGQOS_TEST_NO_CLONE3=0
	placement "the fallback's cgroup.procs write" write 'write([0-9]*, "[0-9]*", ' \
		CGQOS_TEST_NO_CLONE3=1
fi
