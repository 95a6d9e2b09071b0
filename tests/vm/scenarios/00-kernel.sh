#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# 00-kernel: the guest kernel offers what cgqos relies on: cgroup2 with the cpu and cpuset
# controllers, heterogeneous CPU capacities on the big.LITTLE guest, threaded subtrees and
# cpu.uclamp.*. The degraded guests (VMTEST_GUEST x86_64-nocpuset / x86_64-nouclamp) must lack
# cpuset / uclamp. Leaves no cgroup or process behind.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

t_note "guest ${VMTEST_GUEST:-unknown}, kernel $(uname -r), $(nproc) CPUs"

nocpuset=0 nouclamp=0
t_guest x86_64-nocpuset && nocpuset=1
t_guest x86_64-nouclamp && nouclamp=1

# cgroup2 and controllers ---------------------------------------------------------------------

t_check "cgroup2 is mounted at $CG" grep -q "^cgroup2 $CG cgroup2 " /proc/mounts
controllers=" $(t_read "$CG/cgroup.controllers") "
t_note "root cgroup.controllers:$controllers"
case $controllers in
*" cpu "*) t_ok "root cgroup.controllers has cpu" ;;
*) t_fail "root cgroup.controllers has cpu" ;;
esac
has_cpuset=0
case $controllers in *" cpuset "*) has_cpuset=1 ;; esac
if [ "$nocpuset" = 1 ]; then
	t_eq "cpuset is absent from root cgroup.controllers (cgroup_disable=cpuset)" 0 "$has_cpuset"
else
	t_eq "root cgroup.controllers has cpuset" 1 "$has_cpuset"
fi

enable="+cpu"
[ "$has_cpuset" = 1 ] && enable="+cpuset +cpu"
orig_subtree=$(t_read "$CG/cgroup.subtree_control")
t_check "root cgroup.subtree_control accepts '$enable'" t_write "$enable" "$CG/cgroup.subtree_control"
t_note "root cgroup.subtree_control: $(t_read "$CG/cgroup.subtree_control")"

# CPU capacities --------------------------------------------------------------------------------

caps=""
for c in /sys/devices/system/cpu/cpu[0-9]*; do
	[ -r "$c/cpu_capacity" ] && caps="$caps $(cat "$c/cpu_capacity")"
done
caps=${caps# }
t_note "cpu_capacity: ${caps:-none}"
if t_guest arm64-biglittle; then
	t_eq "cpu_capacity is heterogeneous (big.LITTLE)" "512 512 1024 1024" "$caps"
	clusters=""
	for c in /sys/devices/system/cpu/cpu[0-9]*; do
		clusters="$clusters $(t_read "$c/topology/cluster_id")"
	done
	t_eq "little and big CPUs are in separate clusters" "0 0 1 1" "${clusters# }"
fi

# Threaded subtree --------------------------------------------------------------------------------

P=$CG/vmtest-00-threaded
rmdir "$P/a" "$P/b" "$P" 2>/dev/null
t_check "mkdir a domain cgroup" mkdir "$P"
t_check "its cgroup.subtree_control accepts '$enable'" t_write "$enable" "$P/cgroup.subtree_control"
mkdir "$P/a" "$P/b"
t_eq "a new child is a domain" "domain" "$(t_read "$P/a/cgroup.type")"
t_check "writing 'threaded' to a child's cgroup.type works" t_write threaded "$P/a/cgroup.type"
t_eq "the child reads 'threaded'" "threaded" "$(t_read "$P/a/cgroup.type")"
t_eq "its parent became 'domain threaded'" "domain threaded" "$(t_read "$P/cgroup.type")"
t_eq "a domain sibling became 'domain invalid'" "domain invalid" "$(t_read "$P/b/cgroup.type")"
t_check "the sibling can turn threaded too" t_write threaded "$P/b/cgroup.type"
t_eq "the sibling reads 'threaded'" "threaded" "$(t_read "$P/b/cgroup.type")"
t_check_fails "a threaded cgroup cannot turn back into a domain" t_write domain "$P/a/cgroup.type"

sleep 600 &
pid=$!
t_check_fails "cgroup.threads rejects a thread from another thread domain (the root)" \
	t_write "$pid" "$P/a/cgroup.threads"
t_check "moving the process into the threaded root works (cgroup.procs)" t_write "$pid" "$P/cgroup.procs"
t_eq "/proc/PID/cgroup shows the threaded root" "0::/vmtest-00-threaded" "$(t_read "/proc/$pid/cgroup")"
t_check "cgroup.threads of a threaded child takes the single thread" t_write "$pid" "$P/a/cgroup.threads"
t_eq "/proc/PID/cgroup shows the threaded child" "0::/vmtest-00-threaded/a" "$(t_read "/proc/$pid/cgroup")"
t_eq "the child's cgroup.threads lists the thread" "$pid" "$(t_read "$P/a/cgroup.threads")"
t_check_fails "reading cgroup.procs of a threaded cgroup fails (EOPNOTSUPP)" cat "$P/a/cgroup.procs"
# Writing cgroup.procs of a threaded cgroup is allowed: it moves every thread of the process
# (Documentation/admin-guide/cgroup-v2.rst, "cgroup.procs").
t_check "writing a PID to a threaded child's cgroup.procs moves the whole process" \
	t_write "$pid" "$P/b/cgroup.procs"
t_eq "/proc/PID/cgroup shows the other threaded child" "0::/vmtest-00-threaded/b" "$(t_read "/proc/$pid/cgroup")"
if [ "$has_cpuset" = 1 ]; then
	t_check "a threaded child takes cpuset.cpus" t_write 0 "$P/b/cpuset.cpus"
	t_eq "the thread's affinity follows the threaded child's cpuset" "0" \
		"$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$pid/status")"
else
	t_check "no cpuset.cpus without the cpuset controller" test ! -e "$P/b/cpuset.cpus"
fi
kill "$pid"
wait "$pid" 2>/dev/null
t_check "the threaded subtree can be removed" rmdir "$P/a" "$P/b" "$P"

# uclamp ----------------------------------------------------------------------------------------

U=$CG/vmtest-00-uclamp
rmdir "$U" 2>/dev/null
mkdir "$U"
t_check "a child cgroup has cpu.weight" test -e "$U/cpu.weight"
if [ "$nouclamp" = 1 ]; then
	t_check "no cpu.uclamp.min (kernel without CONFIG_UCLAMP_TASK_GROUP)" test ! -e "$U/cpu.uclamp.min"
	t_check "no cpu.uclamp.max" test ! -e "$U/cpu.uclamp.max"
else
	t_check "the root cgroup has no cpu.uclamp.min" test ! -e "$CG/cpu.uclamp.min"
	t_eq "cpu.uclamp.min defaults to 0.00" "0.00" "$(t_read "$U/cpu.uclamp.min")"
	t_eq "cpu.uclamp.max defaults to max" "max" "$(t_read "$U/cpu.uclamp.max")"
	t_check "cpu.uclamp.min accepts 20" t_write 20 "$U/cpu.uclamp.min"
	t_eq "cpu.uclamp.min reads back 20.00" "20.00" "$(t_read "$U/cpu.uclamp.min")"
	t_check "cpu.uclamp.max accepts 80.5" t_write 80.5 "$U/cpu.uclamp.max"
	t_eq "cpu.uclamp.max reads back 80.50" "80.50" "$(t_read "$U/cpu.uclamp.max")"
fi
t_check "the uclamp cgroup can be removed" rmdir "$U"

# Give the root cgroup.subtree_control back as it was, for the scenarios after this one.
disable=""
for c in cpuset cpu; do
	case " $orig_subtree " in *" $c "*) ;; *) case " $enable " in *"+$c "*) disable="$disable -$c" ;; esac ;; esac
done
[ -n "$disable" ] && t_write "${disable# }" "$CG/cgroup.subtree_control"
t_eq "root cgroup.subtree_control is back to '$orig_subtree'" "$orig_subtree" "$(t_read "$CG/cgroup.subtree_control")"

t_done
