#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2016
# 90-exec: `cgqos exec` on a full cgroup2 (cpu, cpuset, uclamp): clone3(CLONE_INTO_CGROUP)
# starts the command in its group, or its class's subgroup, so its first instruction already
# runs under that group's cpuset and uclamp, with the class's own task uclamp; cgqos itself
# never leaves its group (no migration); the exit status is the command's, SIGTERM reaches
# it, a VM's groups are made on the way, and teardown leaves nothing behind.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

/vmtest/cgqos setup >/dev/null 2>&1

nocpuset=0 nouclamp=0
t_guest x86_64-nocpuset && nocpuset=1
t_guest x86_64-nouclamp && nouclamp=1

# What the command sees first: its cgroup, its allowed CPUs, its nice, its uclamp (own and
# effective), and its parent's (cgqos's) cgroup.
report='sed -n "s/^0::/CG /p" /proc/self/cgroup
sed -n "s/^0::/PARENT /p" /proc/$PPID/cgroup
sed -n "s/^Cpus_allowed_list:[[:space:]]*/CPUS /p" /proc/self/status
echo NICE $(cut -d" " -f19 /proc/self/stat)
sed -n "s/^uclamp.min *: */UCLAMP /p" /proc/$$/sched
sed -n "s/^effective uclamp.min *: */EFFECTIVE /p" /proc/$$/sched'
field() { echo "$out" | sed -n "s/^$1 //p"; }

out=$(/vmtest/cgqos exec background -- sh -c "$report")
t_eq "exec exits 0" 0 $?
t_eq "the command starts in chrome/background" /chrome/background "$(field CG)"
t_eq "cgqos stays in its own group (clone3, no migration)" / "$(field PARENT)"

out=$(/vmtest/cgqos exec background --class background -- sh -c "$report")
t_eq "--class background starts in chrome/background/non-urgent" \
	/chrome/background/non-urgent "$(field CG)"
t_eq "with the class's nice" 10 "$(field NICE)"
little=0-3
t_guest arm64-biglittle && little=0-1
if [ "$nocpuset" = 1 ]; then
	t_skip "the non-urgent cpuset applies from the first instruction" "no cpuset"
else
	t_eq "the non-urgent cpuset applies from the first instruction" "$little" "$(field CPUS)"
fi

out=$(/vmtest/cgqos exec ui --class urgent -- sh -c "$report")
t_eq "--class urgent starts in chrome/ui/urgent" /chrome/ui/urgent "$(field CG)"
t_eq "with urgent's nice" -8 "$(field NICE)"
if [ "$nouclamp" = 1 ]; then
	t_skip "urgent's task uclamp.min" "no uclamp"
else
	t_eq "urgent's task uclamp.min (60% of 1024)" 614 "$(field UCLAMP)"
	t_eq "effective: the task's own, above the group's 20%" 614 "$(field EFFECTIVE)"
	out=$(/vmtest/cgqos exec ui -- sh -c "$report")
	t_eq "without a class: no task uclamp.min" 0 "$(field UCLAMP)"
	t_eq "effective: the group's 20% (205)" 205 "$(field EFFECTIVE)"
fi

/vmtest/cgqos exec background -- sh -c 'exit 7'
t_eq "the exit status is the command's" 7 $?
/vmtest/cgqos exec background -- cgqos-no-such-command 2>/dev/null
t_eq "a missing command exits 127" 127 $?

/vmtest/cgqos exec background -- sleep 30 &
parent=$!
# Its child: the process whose parent is cgqos (stat field 4), once it runs sleep.
i=0
child=""
while [ $i -lt 100 ] && [ -z "$child" ]; do
	child=$(awk -v pp="$parent" '$4 == pp && $2 == "(sleep)" { print $1 }' /proc/[0-9]*/stat 2>/dev/null)
	[ -z "$child" ] && sleep 0.05
	i=$((i + 1))
done
t_eq "the sleeping command is in chrome/background" /chrome/background \
	"$(sed -n 's/^0:://p' /proc/"$child"/cgroup 2>/dev/null)"
kill -TERM "$parent"
wait "$parent"
t_eq "SIGTERM to cgqos ends the command: 128+15" 143 $?

out=$(/vmtest/cgqos exec vm:exectest -- sh -c "$report")
t_eq "vm:exectest: the command starts in vms/exectest" /vms/exectest "$(field CG)"
t_check "its vcpu group was made as vm add makes it" test -d "$CG/vms/exectest/vcpu"

/vmtest/cgqos teardown >/dev/null 2>&1
t_eq "teardown removes the groups exec made" no "$([ -d "$CG/vms" ] && echo yes || echo no)"
t_done
