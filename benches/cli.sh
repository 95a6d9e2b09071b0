#!/usr/bin/env bash
# The CLI's own cost: `cgqos move PID GROUP --direct`, process start to exit, against the
# shell doing the same write (`sh -c 'echo PID > .../cgroup.procs'`) from the same kernel
# state. Root, on the host's cgroup2 mount, in a sub-root cgqos-test-clibench-* that it
# removes (with its state directory, a tmpfs like /run) when it ends.
#   benches/cli.sh [--rounds N] [--bin PATH]     (default: target/release/cgqos)
# Two kernel states, each with both commands alternating round by round:
#   warm      the bench's own shell writes the pid to the other group just before, so the
#             measured write finds the cgroup lock's rcu_sync active and waits for no RCU
#             grace period (unless the command takes longer than one to get there)
#   isolated  100 ms of quiet before each command: the write waits for a grace period
# and four commands: `sh` (the echo), `cli` (--direct), `cli-nosock` (no --direct, the
# socket path does not exist: what a plain `cgqos move` costs when no daemon runs) and
# `version` (`cgqos --version`: the binary's start-up alone, nothing moved).
# Prints p50 / p90 per row in microseconds and the ratio cli / sh.
set -uo pipefail

rounds=200 bin=""
while [[ $# -gt 0 ]]; do
	case $1 in
	--rounds) rounds=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	-h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "cli.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${bin:-${CARGO_TARGET_DIR:-$here/target}/release/cgqos}
[[ -x $bin ]] || { echo "cli.sh: no binary $bin (cargo build --release, or --bin)" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "skipped: the CLI benchmark needs root (it moves a process between cgroups)"; exit 0; }
mount=$(awk '$4 == "/" && $0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
[[ -n $mount ]] || { echo "skipped: no cgroup2 mount"; exit 0; }

root=$mount/cgqos-test-clibench-$$
state=$(mktemp -d /dev/shm/cgqos-clibench.XXXXXX) || exit 1
child=""
cleanup() {
	[[ -n $child ]] && kill "$child" 2>/dev/null && wait "$child" 2>/dev/null
	"$bin" -qq --cgroup-root "$root" --state-dir "$state" --direct teardown >/dev/null 2>&1
	[[ -d $root ]] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
	rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

c() { "$bin" -qq --cgroup-root "$root" --state-dir "$state" "$@"; }
c setup >/dev/null || { echo "cli.sh: setup failed" >&2; exit 1; }
sleep 1000 &
child=$!
c --direct move "$child" foreground >/dev/null || { echo "cli.sh: first move failed" >&2; exit 1; }

other() { [[ $1 == foreground ]] && echo background || echo foreground; }
run() { # KIND GROUP
	case $1 in
	sh) sh -c "echo $child > $root/chrome/$2/cgroup.procs" ;;
	cli) c --direct move "$child" "$2" >/dev/null ;;
	cli-nosock) c --socket "$state/no-daemon.sock" move "$child" "$2" >/dev/null ;;
	version) "$bin" --version >/dev/null ;;
	esac
}
declare -A samples
kinds=(sh cli cli-nosock version)
for state_kind in warm isolated; do
	n=$rounds
	[[ $state_kind == isolated ]] && n=$((rounds / 4 > 10 ? rounds / 4 : 10))
	group=foreground
	for ((i = 0; i < n; i++)); do
		for kind in "${kinds[@]}"; do
			group=$(other "$group")
			if [[ $state_kind == warm ]]; then
				echo "$child" >"$root/chrome/$(other "$group")/cgroup.procs"
			else
				sleep 0.1
			fi
			t0=$EPOCHREALTIME
			run "$kind" "$group" || { echo "cli.sh: $kind move failed" >&2; exit 1; }
			t1=$EPOCHREALTIME
			samples[$state_kind.$kind]+="$((${t1/./} - ${t0/./}))"$'\n'
		done
	done
done

pct() { # SAMPLES P
	sort -n <<<"$1" | awk -v p="$2" 'NF { a[n++] = $1 } END { i = int((n - 1) * p + 0.5); print a[i] }'
}
echo "CLI start-to-exit benchmark: $bin ($(stat -c %s "$bin") bytes), kernel $(uname -r), $rounds warm rounds"
printf '%-9s %-11s %8s %8s %10s\n' state command p50_us p90_us x_sh_p50
for state_kind in warm isolated; do
	base=$(pct "${samples[$state_kind.sh]}" 0.5)
	for kind in "${kinds[@]}"; do
		s=${samples[$state_kind.$kind]}
		p50=$(pct "$s" 0.5)
		printf '%-9s %-11s %8s %8s %10s\n' "$state_kind" "$kind" "$p50" "$(pct "$s" 0.9)" \
			"$(awk -v a="$p50" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
	done
done
