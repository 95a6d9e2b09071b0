# shellcheck shell=sh
# Helpers for guest scenarios (tests/vm/scenarios/*.sh). suite.sh puts this file into the
# payload as /vmtest/scenario-lib.sh; a scenario starts with
#   . /vmtest/scenario-lib.sh
# and ends with
#   t_done
# Output is one line per check, "ok - DESCRIPTION" or "not ok - DESCRIPTION", plus "# ..."
# notes. t_done exits 1 if any check failed.

T_PASSED=0
T_FAILED=0
T_NAME=${0##*/}
# shellcheck disable=SC2034 # for the scenarios
CG=/sys/fs/cgroup

# t_ok DESCRIPTION / t_fail DESCRIPTION: record a result.
t_ok() {
	T_PASSED=$((T_PASSED + 1))
	echo "ok - $*"
}
t_fail() {
	T_FAILED=$((T_FAILED + 1))
	echo "not ok - $*"
}
# t_skip DESCRIPTION REASON: a check that does not apply to this guest.
t_skip() {
	echo "ok - $1 # SKIP ${2:-}"
}
t_note() {
	echo "# $*"
}
# t_check DESCRIPTION COMMAND...: ok if COMMAND succeeds.
t_check() {
	_d=$1
	shift
	if "$@"; then t_ok "$_d"; else t_fail "$_d"; fi
}
# t_check_fails DESCRIPTION COMMAND...: ok if COMMAND fails.
t_check_fails() {
	_d=$1
	shift
	if "$@" 2>/dev/null; then t_fail "$_d (it succeeded)"; else t_ok "$_d"; fi
}
# t_eq DESCRIPTION EXPECTED ACTUAL
t_eq() {
	if [ "$2" = "$3" ]; then
		t_ok "$1"
	else
		t_fail "$1 (expected '$2', got '$3')"
	fi
}
# t_write VALUE FILE: write VALUE to FILE (a cgroup or proc file) with one write; fails like
# the kernel does.
t_write() {
	echo "$1" >"$2"
}
# t_read FILE: print FILE's content (empty when unreadable).
t_read() {
	cat "$1" 2>/dev/null
}
# t_guest NAME...: true if VMTEST_GUEST is one of NAMEs.
t_guest() {
	for _g in "$@"; do
		[ "${VMTEST_GUEST:-}" = "$_g" ] && return 0
	done
	return 1
}
# t_done: print the tally, exit 0 if nothing failed, 1 otherwise.
t_done() {
	echo "# $T_NAME: $T_PASSED ok, $T_FAILED not ok"
	[ "$T_FAILED" -eq 0 ] && exit 0
	exit 1
}
