#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 30-placement: a real multi-threaded process moved to foreground, one thread to non-urgent
# and one to urgent, then the whole process to background: every thread keeps its class, the
# non-urgent thread's affinity is the little set; VM groups take processes and vCPU threads;
# the kernel keeps threads inside their process's threaded domain.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

if t_guest x86_64-nocpuset x86_64-nouclamp; then
	t_skip "placement checks" "degraded guest"
	t_done
fi
/vmtest/cgqos setup >/dev/null 2>&1

start_threads() { # N -> sets PID, TIDS
	rm -f /tmp/threads.out
	/vmtest/threads "$1" >/tmp/threads.out &
	PID=$!
	i=0
	while [ $i -lt 100 ] && ! grep -q tids /tmp/threads.out 2>/dev/null; do
		sleep 0.05
		i=$((i + 1))
	done
	TIDS=$(sed -n 's/^pid [0-9]* tids //p' /tmp/threads.out)
}
cg() { sed -n 's/^0:://p' "/proc/$1/task/$2/cgroup"; }
allowed() { sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$1/task/$2/status"; }

start_threads 4
set -- $TIDS
t1=$1 t2=$2
t_note "process $PID threads $TIDS"

t_check "move $PID foreground" /vmtest/cgqos move "$PID" foreground
for t in $PID $TIDS; do
	t_eq "thread $t in chrome/foreground" /chrome/foreground "$(cg $PID $t)"
done
t_check "move --thread $t1 non-urgent" /vmtest/cgqos move --thread "$t1" non-urgent
t_check "move --thread $t2 urgent" /vmtest/cgqos move --thread "$t2" urgent

t_check "move $PID background" /vmtest/cgqos move "$PID" background
t_eq "non-urgent thread kept its class" /chrome/background/non-urgent "$(cg $PID $t1)"
t_eq "urgent thread kept its class" /chrome/background/urgent "$(cg $PID $t2)"
t_eq "main thread in the group's default" /chrome/background "$(cg $PID $PID)"
t_eq "other thread in the group's default" /chrome/background "$(cg $PID $3)"

little=0-3
t_guest arm64-biglittle && little=0-1
t_eq "non-urgent thread's affinity is the little set" "$little" "$(allowed $PID $t1)"
# resourced's rule: no thread of a background process gets a big core, urgent or not.
t_eq "urgent thread of a background process: the little set" "$little" "$(allowed $PID $t2)"
t_eq "default thread of a background process: the little set" "$little" "$(allowed $PID $PID)"

w=$(/vmtest/cgqos where "$PID")
t_check "where lists the urgent thread" sh -c "echo '$w' | grep -q '^$t2 .*chrome/background *urgent'"

# The kernel's rule, not cgqos's: a thread cannot leave its process's threaded domain
# (EOPNOTSUPP). (With only threaded controllers enabled, the no-internal-process rule does not
# bite: a process written into vms/ would make it a thread root, so nothing here does that.)
t_check_fails "the kernel refuses a browser thread in vms/arcvm/vcpu" t_write "$t1" $CG/vms/arcvm/vcpu/cgroup.threads
/vmtest/cgqos move --thread "$t1" vcpu >/dev/null 2>&1
t_eq "cgqos refuses a VM class for a browser thread (exit 2)" 2 $?

# VMs: a VM group, its process and a vCPU thread.
t_check "vm add termina" /vmtest/cgqos vm add termina
p1=$PID
start_threads 2
set -- $TIDS
t_check "move the VM process to vm:termina" /vmtest/cgqos move "$PID" vm:termina
t_check "move a vCPU thread" /vmtest/cgqos move --thread "$1" vcpu
t_eq "vCPU thread in vms/termina/vcpu" /vms/termina/vcpu "$(cg $PID $1)"
t_eq "the other thread stays in vms/termina" /vms/termina "$(cg $PID $2)"
t_check "an I/O process goes to arcvm-io" /vmtest/cgqos move "$p1" arcvm-io
t_eq "the whole process is in vms/arcvm/io" /vms/arcvm/io "$(cg $p1 $t1)"
t_check "vm remove termina" /vmtest/cgqos vm remove termina
t_eq "vms/termina is gone" no "$([ -d $CG/vms/termina ] && echo yes || echo no)"
t_eq "its process went back to the root cgroup" / "$(cg $PID $PID)"

/vmtest/cgqos move 4000000 background >/dev/null 2>&1
t_eq "a vanished pid exits 3" 3 $?
/vmtest/cgqos move 2 background >/dev/null 2>&1
t_eq "a kernel thread is refused (exit 2)" 2 $?

kill "$p1" "$PID"
t_done
