#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 80-top: `cgqos top --once --json` against a known CPU hog (a shell busy loop) placed in
# chrome/ui: the group and the hog's task use more than half a CPU over 2 s, the counts are
# 1 process / 1 thread, the effective cpuset is all CPUs (none without cpuset), and
# uclamp.min is 20 both as written and effective, matching the kernel's own effective
# uclamp.min of the task (none without uclamp). The only rate assertion of the suite: a
# busy loop gets well over half of an otherwise idle vCPU even under TCG.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

/vmtest/cgqos teardown >/dev/null 2>&1
/vmtest/cgqos setup >/dev/null 2>&1
t_check "setup (possibly degraded) built chrome/ui" test -d $CG/chrome/ui

sh -c 'while :; do :; done' &
hog=$!
/vmtest/cgqos move "$hog" ui >/dev/null
# A thread request records why (balanced: the group's default class, nice 0).
/vmtest/cgqos move --thread "$hog" balanced >/dev/null
t_eq "the hog is in chrome/ui" /chrome/ui "$(sed -n 's/^0:://p' /proc/$hog/cgroup)"

json=$(/vmtest/cgqos top --once --json --interval 2)
t_eq "top --once --json exits 0" 0 $?

# jget PATH KEY [task]: a scalar of group PATH (or of its busiest task) in $json, from the
# pretty-printed JSON (one field per line); empty when absent.
jget() {
	printf '%s\n' "$json" | awk -v p="\"path\": \"$1\"," -v k="\"$2\": " -v task="${3:-}" '
		{ sub(/^ +/, "") }
		!g && $0 == p { g = 1; next }
		g && !intask && $0 ~ /^"tasks": \[/ {
			if (task == "" || $0 ~ /\[\]/) exit
			intask = 1; next
		}
		g && index($0, k) == 1 {
			v = substr($0, length(k) + 1); sub(/,$/, "", v); gsub(/"/, "", v); print v; exit
		}'
}
# gt A B: A > B as numbers.
# shellcheck disable=SC2317 # called through t_check
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'; }

cpu=$(jget chrome/ui cpu_percent)
t_check "chrome/ui uses more than half a CPU (cpu_percent $cpu)" gt "$cpu" 50
t_eq "chrome/ui has 1 process" 1 "$(jget chrome/ui processes)"
t_eq "chrome/ui has 1 thread" 1 "$(jget chrome/ui threads)"
t_eq "its busiest task is the hog" "$hog" "$(jget chrome/ui tid task)"
tcpu=$(jget chrome/ui cpu_percent task)
t_check "the hog's own CPU is over 50% ($tcpu)" gt "$tcpu" 50
t_eq "placed by the thread request" yes "$(jget chrome/ui placed_by task | grep -q '^cgqos move --thread' && echo yes || echo no)"
t_check "the root's CPU includes it" gt "$(jget '' cpu_percent)" 50
t_note "chrome/ui cpu.pressure some avg10: $(jget chrome/ui pressure_some_avg10) (null where PSI is off)"

if t_guest x86_64-nocpuset; then
	t_eq "no effective cpuset without the cpuset controller" null "$(jget chrome/ui cpus_effective)"
else
	t_eq "effective cpuset of chrome/ui" 0-3 "$(jget chrome/ui cpus_effective)"
fi
if t_guest x86_64-nouclamp; then
	t_eq "no uclamp.min without uclamp" null "$(jget chrome/ui uclamp_min)"
	t_eq "no effective uclamp.min either" null "$(jget chrome/ui uclamp_min_effective)"
else
	t_eq "uclamp.min of chrome/ui" 20.0 "$(jget chrome/ui uclamp_min)"
	t_eq "effective uclamp.min of chrome/ui" 20.0 "$(jget chrome/ui uclamp_min_effective)"
	t_eq "uclamp.min of chrome/background stays 0" 0.0 "$(jget chrome/background uclamp_min_effective)"
	# The kernel's view of the task: 20% of 1024, rounded.
	t_eq "the kernel agrees: the hog's effective uclamp.min is 205" 205 \
		"$(sed -n 's/^effective uclamp.min *: *//p' /proc/$hog/sched)"
fi

text=$(/vmtest/cgqos top --once --interval 0.5 </dev/null)
t_check "the text table lists chrome/ui" sh -c "echo \"\$0\" | grep -q '^    ui '" "$text"

kill "$hog"
wait "$hog" 2>/dev/null
/vmtest/cgqos teardown >/dev/null 2>&1
t_done
