#!/usr/bin/env bash
# The CLI's own cost: `cgqos move PID GROUP --direct`, process start to exit, against the
# shell doing the same write (`sh -c 'echo PID > .../cgroup.procs'`) from the same kernel
# state. Root, on the host's cgroup2 mount, in a sub-root cgqos-test-clibench-* that it
# removes (with its state directory, a tmpfs like /run) when it ends.
#   benches/cli.sh [--rounds N] [--bin [LABEL=]PATH]... [--floor [LABEL=]PATH]...
# --bin more than once compares binaries (say, `make STATIC=no` against `make`) in the same
# run, their commands interleaved round by round; LABEL names a binary's rows (default: 1,
# 2, ...; default binary: target/release/cgqos). The first binary sets the group tree up.
# --floor adds a row `floor:LABEL` running `PATH --version`: a baseline program, such as a
# bare Rust `println!`, dynamic or static (the floor of any program built that way).
# Two kernel states, each with every command alternating round by round:
#   warm      the bench's own shell writes the pid to the other group just before, so the
#             measured write finds the cgroup lock's rcu_sync active and waits for no RCU
#             grace period (unless the command takes longer than one to get there)
#   isolated  100 ms of quiet before each command: the write waits for a grace period
# and, with `perf` installed, a third pass `cpu`: the warm state with each command run under
# `perf stat` (its CPU time and page faults, not wall time).
# The commands: `sh` (the echo) and, per binary, `cli` (--direct), `cli-recorded` (--direct
# without --cgroup-root: the root recorded in the state, as a user types it), `cli-nosock` (no
# --direct, the socket path does not exist: what a plain `cgqos move` costs when no daemon
# runs) and `version` (`cgqos --version`: the binary's start-up alone, nothing moved).
# Prints p50 / p90 per row (microseconds: wall time, CPU time in the cpu pass), the ratio of
# the p50s to sh's, and the p50 of page faults in the cpu pass.
set -uo pipefail

rounds=200 bins=() labels=() floors=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--rounds) rounds=$2; shift 2 ;;
	--bin)
		if [[ $2 == *=* ]]; then labels+=("${2%%=*}") bins+=("${2#*=}"); else labels+=("$((${#bins[@]} + 1))") bins+=("$2"); fi
		shift 2 ;;
	--floor)
		if [[ $2 == *=* ]]; then floors+=("$2"); else floors+=("$((${#floors[@]} + 1))=$2"); fi
		shift 2 ;;
	-h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "cli.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${#bins[@]} -eq 0 ]]; then
	bins=("${CARGO_TARGET_DIR:-$here/target}/release/cgqos") labels=(1)
fi
for b in "${bins[@]}"; do
	[[ -x $b ]] || { echo "cli.sh: no binary $b (cargo build --release, or --bin)" >&2; exit 2; }
done
[[ $EUID -eq 0 ]] || { echo "skipped: the CLI benchmark needs root (it moves a process between cgroups)"; exit 0; }
mount=$(awk '$4 == "/" && $0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
[[ -n $mount ]] || { echo "skipped: no cgroup2 mount"; exit 0; }

root=$mount/cgqos-test-clibench-$$
state=$(mktemp -d /dev/shm/cgqos-clibench.XXXXXX) || exit 1
child=""
cleanup() {
	[[ -n $child ]] && kill "$child" 2>/dev/null && wait "$child" 2>/dev/null
	c_args "${bins[0]}" --direct teardown
	"${cmd[@]}" >/dev/null 2>&1
	[[ -d $root ]] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
	rm -rf "$state" "${perf_out:-}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

c_args() { # BIN ARGS...: the command line of a cgqos command on the bench's tree
	cmd=("$1" -qq --cgroup-root "$root" --state-dir "$state" "${@:2}")
}
c_args "${bins[0]}" setup
"${cmd[@]}" >/dev/null || { echo "cli.sh: setup failed" >&2; exit 1; }
sleep 1000 &
child=$!
c_args "${bins[0]}" --direct move "$child" foreground
"${cmd[@]}" >/dev/null || { echo "cli.sh: first move failed" >&2; exit 1; }

other() { [[ $1 == foreground ]] && echo background || echo foreground; }
command_of() { # KIND BIN GROUP: sets cmd
	case $1 in
	sh) cmd=(sh -c "echo $child > $root/chrome/$3/cgroup.procs") ;;
	cli) c_args "$2" --direct move "$child" "$3" ;;
	cli-recorded) cmd=("$2" -qq --state-dir "$state" --direct move "$child" "$3") ;;
	cli-nosock) c_args "$2" --socket "$state/no-daemon.sock" move "$child" "$3" ;;
	version | floor) cmd=("$2" --version) ;;
	esac
}
# Rows: "kind" for sh, "kind:label" per binary; bin_of maps a row to its binary.
declare -A bin_of samples faults
rows=(sh)
for i in "${!bins[@]}"; do
	for kind in cli cli-recorded cli-nosock version; do
		rows+=("$kind:${labels[$i]}")
		bin_of[$kind:${labels[$i]}]=${bins[$i]}
	done
done
for f in "${floors[@]}"; do
	[[ -x ${f#*=} ]] || { echo "cli.sh: no floor program ${f#*=}" >&2; exit 2; }
	rows+=("floor:${f%%=*}")
	bin_of[floor:${f%%=*}]=${f#*=}
done
states=(warm isolated)
perf_out=$(mktemp /tmp/cgqos-clibench-perf.XXXXXX)
command -v perf >/dev/null && perf stat -e task-clock true 2>/dev/null && states+=(cpu)
for state_kind in "${states[@]}"; do
	n=$rounds
	[[ $state_kind == isolated ]] && n=$((rounds / 4 > 10 ? rounds / 4 : 10))
	group=foreground
	for ((i = 0; i < n; i++)); do
		for row in "${rows[@]}"; do
			kind=${row%%:*}
			group=$(other "$group")
			if [[ $state_kind == isolated ]]; then
				sleep 0.1
			else
				echo "$child" >"$root/chrome/$(other "$group")/cgroup.procs"
			fi
			command_of "$kind" "${bin_of[$row]:-}" "$group"
			if [[ $state_kind == cpu ]]; then
				perf stat -x, -o "$perf_out" -e task-clock,page-faults -- "${cmd[@]}" >/dev/null ||
					{ echo "cli.sh: $kind move failed" >&2; exit 1; }
				# task-clock is in milliseconds
				samples[$state_kind.$row]+="$(awk -F, '$3 == "task-clock" { printf "%d", $1 * 1000 }' "$perf_out")"$'\n'
				faults[$row]+="$(awk -F, '$3 == "page-faults" { print $1 }' "$perf_out")"$'\n'
				continue
			fi
			t0=$EPOCHREALTIME
			"${cmd[@]}" >/dev/null || { echo "cli.sh: $kind move failed" >&2; exit 1; }
			t1=$EPOCHREALTIME
			samples[$state_kind.$row]+="$((${t1/./} - ${t0/./}))"$'\n'
		done
	done
done
pct() { # SAMPLES P
	sort -n <<<"$1" | awk -v p="$2" 'NF { a[n++] = $1 } END { i = int((n - 1) * p + 0.5); print a[i] }'
}
echo "CLI start-to-exit benchmark, kernel $(uname -r), $rounds warm rounds"
for i in "${!bins[@]}"; do
	echo "  ${labels[$i]}: ${bins[$i]} ($(stat -c %s "${bins[$i]}") bytes, $(file -b "${bins[$i]}" | grep -o 'static-pie linked\|statically linked\|dynamically linked'))"
done
for f in "${floors[@]}"; do
	echo "  floor:${f%%=*}: ${f#*=} ($(file -b "${f#*=}" | grep -o 'static-pie linked\|statically linked\|dynamically linked'))"
done
printf '%-9s %-18s %8s %8s %10s %7s\n' state command p50_us p90_us x_sh_p50 faults
for state_kind in "${states[@]}"; do
	base=$(pct "${samples[$state_kind.sh]}" 0.5)
	for row in "${rows[@]}"; do
		s=${samples[$state_kind.$row]}
		p50=$(pct "$s" 0.5)
		f=-
		[[ $state_kind == cpu ]] && f=$(pct "${faults[$row]}" 0.5)
		printf '%-9s %-18s %8s %8s %10s %7s\n' "$state_kind" "$row" "$p50" "$(pct "$s" 0.9)" \
			"$(awk -v a="$p50" -v b="$base" 'BEGIN { printf "%.2f", a / b }')" "$f"
	done
done
