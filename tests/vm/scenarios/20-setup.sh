#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 20-setup: cgqos setup builds the whole tree on a real kernel: cgroup.type of every group,
# controllers enabled, cpuset.cpus.effective of non-urgent groups = the little set (arm64) or
# all CPUs (x86), cpu.uclamp.min = boost-urgent (20.00) and effective top-down (checked on a
# real task's effective uclamp.min), background weight below foreground, and a second setup
# changes nothing. Degraded guests are covered by 50-degraded.sh.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

if t_guest x86_64-nocpuset x86_64-nouclamp; then
	t_skip "full setup checks" "degraded guest"
	t_done
fi

out=$(/vmtest/cgqos setup 2>&1)
rc=$?
t_eq "cgqos setup exits 0" 0 "$rc"
echo "$out" | grep -q unsupported && t_note "setup said: $(echo "$out" | grep unsupported)"

t_eq "chrome is the thread root" "domain threaded" "$(t_read $CG/chrome/cgroup.type)"
for g in ui foreground background; do
	t_eq "chrome/$g is threaded" threaded "$(t_read $CG/chrome/$g/cgroup.type)"
	for c in urgent non-urgent; do
		t_eq "chrome/$g/$c is threaded" threaded "$(t_read $CG/chrome/$g/$c/cgroup.type)"
	done
done
t_eq "vms/arcvm is a thread root" "domain threaded" "$(t_read $CG/vms/arcvm/cgroup.type)"
t_eq "vms/arcvm/vcpu is threaded" threaded "$(t_read $CG/vms/arcvm/vcpu/cgroup.type)"
t_eq "vms/arcvm/io is threaded" threaded "$(t_read $CG/vms/arcvm/io/cgroup.type)"

for g in "" chrome chrome/ui chrome/foreground chrome/background vms vms/arcvm; do
	sc=" $(t_read $CG/$g/cgroup.subtree_control) "
	case $sc in *" cpu "*) case $sc in *" cpuset "*) t_ok "/$g enables cpu and cpuset" ;; *) t_fail "/$g enables cpuset (has:$sc)" ;; esac ;; *) t_fail "/$g enables cpu (has:$sc)" ;; esac
done

little=0-3
t_guest arm64-biglittle && little=0-1
for g in ui foreground background; do
	t_eq "chrome/$g/non-urgent cpuset.cpus.effective" "$little" "$(t_read $CG/chrome/$g/non-urgent/cpuset.cpus.effective)"
	# No thread of a background process gets a big core, urgent or not (resourced's rule).
	urgent=0-3
	[ "$g" = background ] && urgent=$little
	t_eq "chrome/$g/urgent cpuset.cpus.effective" "$urgent" "$(t_read $CG/chrome/$g/urgent/cpuset.cpus.effective)"
	t_eq "chrome/$g cpuset.cpus.effective" "$urgent" "$(t_read $CG/chrome/$g/cpuset.cpus.effective)"
done

for g in chrome chrome/ui chrome/foreground chrome/ui/urgent chrome/foreground/urgent; do
	t_eq "$g cpu.uclamp.min" "20.00" "$(t_read $CG/$g/cpu.uclamp.min)"
done
t_eq "chrome/background cpu.uclamp.min stays 0" "0.00" "$(t_read $CG/chrome/background/cpu.uclamp.min)"
fg=$(t_read $CG/chrome/foreground/cpu.weight)
bg=$(t_read $CG/chrome/background/cpu.weight)
t_check "background cpu.weight ($bg) is below foreground ($fg)" test "$bg" -lt "$fg"

# The boost is effective: a task in ui gets effective uclamp.min 205 (20% of 1024), one in
# background gets 0. The kernel caps by every ancestor, so this fails if one is missing.
sleep 300 &
p=$!
/vmtest/cgqos move "$p" ui >/dev/null
t_eq "a task in chrome/ui has effective uclamp.min 205" 205 "$(sed -n 's/^effective uclamp.min *: *//p' /proc/$p/sched)"
/vmtest/cgqos move "$p" background >/dev/null
t_eq "a task in chrome/background has effective uclamp.min 0" 0 "$(sed -n 's/^effective uclamp.min *: *//p' /proc/$p/sched)"
kill "$p"

again=$(/vmtest/cgqos setup --json)
t_check "a second setup changes nothing" sh -c "echo '$again' | grep -q '\"changed\": 0'"
t_check "setup --dry-run reports nothing to do" sh -c "/vmtest/cgqos setup --dry-run | grep -q 'nothing to do'"
t_done
