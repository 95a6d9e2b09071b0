#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 60-daemon: the daemon on a real kernel: it converges the tree at start, places a process
# through its socket (and the CLI goes through it), and when a CPU goes offline it
# re-detects the CPUs from the kernel's uevent and converges the cpusets.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

if t_guest x86_64-nocpuset x86_64-nouclamp; then
	t_skip "daemon checks" "degraded guest"
	t_done
fi
/vmtest/cgqos teardown >/dev/null 2>&1
mkdir -p /etc/cgqos
# Debug level: a move applied in full is logged at debug (docs/deployment.md "Logging").
CGQOS_LOG=debug /vmtest/cgqos daemon >/tmp/daemon.log 2>&1 &
d=$!
i=0
while [ $i -lt 100 ] && [ ! -S /run/cgqos/cgqos.sock ]; do
	sleep 0.05
	i=$((i + 1))
done
t_check "the daemon serves /run/cgqos/cgqos.sock" test -S /run/cgqos/cgqos.sock
t_eq "it converged the tree at start" threaded "$(t_read $CG/chrome/ui/urgent/cgroup.type)"

sleep 300 &
p=$!
t_check "move through the daemon" /vmtest/cgqos move "$p" ui
t_eq "the process is in chrome/ui" /chrome/ui "$(sed -n 's/^0:://p' /proc/$p/cgroup)"
t_check "the daemon logged the request" grep -q "applied: $p -> ui" /tmp/daemon.log
/vmtest/cgqos --direct move "$p" ui >/dev/null 2>&1
t_eq "a direct run while the daemon holds the state is refused (exit 1)" 1 $?

# CPU hotplug: CPU 3 goes offline; all CPUs become 0-2 and the cpusets follow.
t_write 0 /sys/devices/system/cpu/cpu3/online
i=0
while [ $i -lt 60 ] && [ "$(t_read $CG/chrome/ui/urgent/cpuset.cpus)" != "0-2" ]; do
	sleep 0.05
	i=$((i + 1))
done
t_eq "after CPU 3 went offline, urgent cpuset.cpus is 0-2" 0-2 "$(t_read $CG/chrome/ui/urgent/cpuset.cpus)"
if t_guest arm64-biglittle; then
	t_eq "the little set is unchanged (0-1)" 0-1 "$(t_read $CG/chrome/ui/non-urgent/cpuset.cpus)"
else
	t_eq "non-urgent follows all CPUs (0-2)" 0-2 "$(t_read $CG/chrome/ui/non-urgent/cpuset.cpus)"
fi
t_write 1 /sys/devices/system/cpu/cpu3/online
i=0
while [ $i -lt 60 ] && [ "$(t_read $CG/chrome/ui/urgent/cpuset.cpus)" != "0-3" ]; do
	sleep 0.05
	i=$((i + 1))
done
t_eq "after CPU 3 came back, urgent cpuset.cpus is 0-3 again" 0-3 "$(t_read $CG/chrome/ui/urgent/cpuset.cpus)"

kill "$d"
wait "$d" 2>/dev/null
t_check "SIGTERM removes the socket" test ! -e /run/cgqos/cgqos.sock
t_check "teardown after the daemon" /vmtest/cgqos teardown
t_eq "the process went back to the root" / "$(sed -n 's/^0:://p' /proc/$p/cgroup)"
kill "$p"
t_note "$(tail -n 3 /tmp/daemon.log)"
t_done
