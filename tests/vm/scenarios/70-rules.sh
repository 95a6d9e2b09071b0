#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 70-rules: thread classes on a real kernel: move --thread applies the class's attributes
# (per-task uclamp.min 614 where the kernel has uclamp, nice -8), and the daemon's rules
# classify a program when it starts, and a child it forks without exec; reset restores nice
# and cgroup.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

if t_guest x86_64-nocpuset; then
	t_skip "rules checks" "covered on the other guests"
	t_done
fi
/vmtest/cgqos teardown >/dev/null 2>&1
/vmtest/cgqos setup >/dev/null 2>&1
nice_of() { sed 's/.*) //' /proc/$1/task/$2/stat | cut -d' ' -f17; }
uclamp_of() { sed -n 's/^uclamp.min *: *//p' /proc/$1/task/$2/sched; }

/vmtest/threads 2 >/tmp/t70.out &
p=$!
sleep 0.3
set -- $(sed -n 's/^pid [0-9]* tids //p' /tmp/t70.out)
t1=$1
/vmtest/cgqos move "$p" foreground >/dev/null
t_check "move --thread $t1 urgent" /vmtest/cgqos move --thread "$t1" urgent
t_eq "the thread is in foreground/urgent" /chrome/foreground/urgent "$(sed -n 's/^0:://p' /proc/$p/task/$t1/cgroup)"
t_eq "urgent's nice -8" -8 "$(nice_of $p $t1)"
if t_guest x86_64-nouclamp; then
	t_note "no per-task uclamp on this kernel: the class's other attributes apply"
else
	t_eq "urgent's per-task uclamp.min 614 (60%)" 614 "$(uclamp_of $p $t1)"
fi
t_check "move --thread $t1 QOS_BACKGROUND" /vmtest/cgqos move --thread "$t1" QOS_BACKGROUND
t_eq "background's nice 10" 10 "$(nice_of $p $t1)"
t_eq "and non-urgent cgroup" /chrome/foreground/non-urgent "$(sed -n 's/^0:://p' /proc/$p/task/$t1/cgroup)"
t_check "reset" /vmtest/cgqos reset
t_eq "reset restored nice 0" 0 "$(nice_of $p $t1)"
t_eq "reset restored the cgroup" / "$(sed -n 's/^0:://p' /proc/$p/task/$t1/cgroup)"
kill "$p"

# Rules in the daemon: every "threads" process goes to background, threads utility.
mkdir -p /etc/cgqos/rules.d
cat >/etc/cgqos/rules.d/10-threads.yaml <<'YAML'
rules:
  - name: threads-app
    match: {argv0: "threads"}
    group: background
    class: utility
YAML
t_check "rules check" /vmtest/cgqos rules check
/vmtest/cgqos daemon >/tmp/d70.log 2>&1 &
d=$!
i=0
while [ $i -lt 100 ] && [ ! -S /run/cgqos/cgqos.sock ]; do sleep 0.05; i=$((i + 1)); done
/vmtest/threads 2 >/tmp/t70b.out &
q=$!
i=0
while [ $i -lt 100 ] && [ "$(nice_of $q $q 2>/dev/null)" != 1 ]; do sleep 0.05; i=$((i + 1)); done
t_eq "a started program is classified by rule (nice 1)" 1 "$(nice_of $q $q)"
t_eq "and placed in background/non-urgent" /chrome/background/non-urgent "$(sed -n 's/^0:://p' /proc/$q/cgroup)"
t_check "why names the rule" sh -c "/vmtest/cgqos why $q | grep -q 'rule threads-app (/etc/cgqos/rules.d/10-threads.yaml:2)'"
# A process forked without exec by a classified one (a zygote's child): classified on its
# fork event (its creator is in the daemon's set of creators), recorded, and undone.
/vmtest/threads 1 --fork-after 300 >/tmp/t70c.out &
z=$!
i=0
while [ $i -lt 100 ] && ! grep -q '^child ' /tmp/t70c.out; do sleep 0.05; i=$((i + 1)); done
c=$(sed -n 's/^child //p' /tmp/t70c.out)
i=0
while [ $i -lt 100 ] && ! /vmtest/cgqos why "$c" 2>/dev/null | grep -q 'rule threads-app'; do sleep 0.05; i=$((i + 1)); done
t_check "a child forked without exec is classified by the rule" sh -c "/vmtest/cgqos why $c | grep -q 'rule threads-app'"
t_eq "and sits in background/non-urgent" /chrome/background/non-urgent "$(sed -n 's/^0:://p' /proc/$c/cgroup)"
t_check "the daemon used its set of creators" sh -c "grep -q 'an eBPF set of at most' /tmp/d70.log && ! grep -q 'no set of creators' /tmp/d70.log"
kill "$d"
wait "$d" 2>/dev/null
t_check "reset after the daemon" /vmtest/cgqos reset
t_eq "nice restored" 0 "$(nice_of $q $q)"
t_eq "the forked child's nice restored" 0 "$(nice_of $c $c)"
t_eq "and its cgroup" / "$(sed -n 's/^0:://p' /proc/$c/cgroup)"
kill "$q" "$z" "$c"
rm -r /etc/cgqos/rules.d
/vmtest/cgqos teardown >/dev/null 2>&1
t_done
