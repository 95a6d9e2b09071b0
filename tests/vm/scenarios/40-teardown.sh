#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 40-teardown: teardown restores every task cgqos moved to its original cgroup (here the
# root, and a cgroup of our own for a second process), moves children forked inside the
# groups out, removes the whole tree; a second teardown is harmless.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

/vmtest/cgqos setup >/dev/null 2>&1
cg() { sed -n 's/^0:://p' "/proc/$1/task/$2/cgroup"; }

mkdir -p $CG/elsewhere
sleep 300 &
a=$!
sleep 300 &
b=$!
t_write "$b" $CG/elsewhere/cgroup.procs
/vmtest/threads 3 >/tmp/td.out &
c=$!
sleep 0.3
tids=$(sed -n 's/^pid [0-9]* tids //p' /tmp/td.out)
set -- $tids

/vmtest/cgqos move "$a" foreground >/dev/null
/vmtest/cgqos move "$b" background >/dev/null
/vmtest/cgqos move "$c" ui >/dev/null
/vmtest/cgqos move --thread "$1" urgent >/dev/null 2>&1
t_eq "b is in chrome/background before teardown" /chrome/background "$(cg $b $b)"

out=$(/vmtest/cgqos teardown 2>&1)
t_eq "teardown exits 0" 0 $?
t_note "$(echo "$out" | head -n 5)"
t_eq "a back in the root cgroup" / "$(cg $a $a)"
t_eq "b back in /elsewhere" /elsewhere "$(cg $b $b)"
for t in $c $tids; do
	t_eq "thread $t of c back in the root cgroup" / "$(cg $c $t)"
done
t_eq "chrome/ removed" no "$([ -d $CG/chrome ] && echo yes || echo no)"
t_eq "vms/ removed" no "$([ -d $CG/vms ] && echo yes || echo no)"
/vmtest/cgqos teardown >/dev/null 2>&1
t_eq "a second teardown is harmless" 0 $?
kill "$a" "$b" "$c"
rmdir $CG/elsewhere
t_done
