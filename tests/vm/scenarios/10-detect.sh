#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2046
# 10-detect: cgqos detect reads the kernel's own topology: on the arm64 big.LITTLE guest the
# little CPUs come from cpu_capacity (512 512 1024 1024 -> 0-1); x86 guests are not hybrid.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

out=$(/vmtest/cgqos detect --json)
t_check "cgqos detect --json exits 0" test $? -eq 0
t_note "$(echo "$out" | tr -d '\n' | sed 's/  */ /g' | cut -c1-300)"
field() { echo "$out" | sed -n "s/^  \"$1\": \(.*\),\$/\1/p" | head -n1; }

if t_guest arm64-biglittle; then
	t_eq "source is cpu_capacity" '"cpu_capacity"' "$(field source)"
	t_eq "hybrid" "true" "$(field hybrid)"
	t_eq "little CPUs are 0-1" '"0-1"' "$(field little)"
	t_eq "all CPUs are 0-3" '"0-3"' "$(field all)"
else
	t_eq "not hybrid" "false" "$(field hybrid)"
	t_eq "no little CPUs" '""' "$(field little)"
	t_eq "all CPUs are 0-3" '"0-3"' "$(field all)"
fi
t_done
