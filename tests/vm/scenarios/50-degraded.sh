#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 50-degraded: on a kernel without the cpuset controller (cgroup_disable=cpuset) or without
# uclamp (a kernel built without CONFIG_UCLAMP_TASK), setup builds what it can, reports the
# rest as unsupported and exits 0; --strict exits 5 having written nothing. On full guests
# --strict succeeds.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

/vmtest/cgqos teardown >/dev/null 2>&1
if t_guest x86_64-nocpuset x86_64-nouclamp; then
	out=$(/vmtest/cgqos setup --strict 2>&1)
	t_eq "setup --strict exits 5" 5 $?
	t_eq "--strict wrote nothing" no "$([ -d $CG/chrome ] && echo yes || echo no)"
	out=$(/vmtest/cgqos setup 2>&1)
	t_eq "setup exits 0" 0 $?
	t_note "$(echo "$out" | grep unsupported | cut -c1-200)"
	if t_guest x86_64-nocpuset; then
		t_check "cpuset reported unsupported" sh -c "echo \"\$0\" | grep -q 'unsupported.*cpuset'" "$out"
		t_eq "cpu.uclamp.min still applied" "20.00" "$(t_read $CG/chrome/ui/cpu.uclamp.min)"
	else
		t_check "uclamp reported unsupported" sh -c "echo \"\$0\" | grep -q 'unsupported.*cpu.uclamp.min'" "$out"
		t_eq "cpuset still applied" "0-3" "$(t_read $CG/chrome/ui/urgent/cpuset.cpus.effective)"
	fi
	t_eq "threaded groups still built" threaded "$(t_read $CG/chrome/ui/urgent/cgroup.type)"
	t_check "status lists the unsupported settings" sh -c "/vmtest/cgqos status | grep -q 'unsupported by this kernel'"
else
	t_check "setup --strict succeeds on a full kernel" /vmtest/cgqos setup --strict
fi
/vmtest/cgqos teardown >/dev/null 2>&1
t_eq "teardown exits 0" 0 $?
t_done
