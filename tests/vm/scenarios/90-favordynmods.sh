#!/bin/sh
# shellcheck source-path=SCRIPTDIR disable=SC2086,SC2317
# 90-favordynmods: a board with `cgqos: favor-dynmods: true` makes setup reconfigure the
# cgroup2 mount with favordynmods, keeping its other options (nsdelegate and
# memory_recursiveprot, set here first); --dry-run only says so; a second setup has nothing
# to do; status reports it. Last in order: on 6.18 the kernel keeps per-threadgroup locking
# once the option was on, even after a remount without it, so no scenario may run after this.
# shellcheck source=../scenario-lib.sh
. /vmtest/scenario-lib.sh

opts() { sed -n 's|^cgroup2 /sys/fs/cgroup cgroup2 \([^ ]*\) .*|\1|p' /proc/mounts; }
has() { case ",$(opts)," in *",$1,"*) return 0 ;; esac; return 1; }

board=/tmp/favor-board.yaml
cat >$board <<'EOF'
chromeos:
  devices:
    - $device-name: favor
      skus:
        - $sku-id: 1
          config:
            cgqos:
              favor-dynmods: true
EOF
c() { /vmtest/cgqos --model $board "$@"; }

if ! grep -qx favordynmods /sys/kernel/cgroup/features; then
	t_skip "favordynmods" "the kernel has no favordynmods"
	t_done
fi
mount -o remount,nsdelegate,memory_recursiveprot $CG
t_note "mount options before: $(opts)"
t_check_fails "favordynmods is off at boot" has favordynmods

out=$(c setup --dry-run 2>&1)
case $out in
*"would change: remount /sys/fs/cgroup with favordynmods"*) t_ok "setup --dry-run says it would remount" ;;
*) t_fail "setup --dry-run says it would remount (said: $(echo "$out" | head -n 3))" ;;
esac
t_check_fails "the dry run left the mount alone" has favordynmods

out=$(c setup 2>&1)
t_eq "setup with favor-dynmods exits 0" 0 "$?"
case $out in
*"changed: remount /sys/fs/cgroup with favordynmods"*) t_ok "setup reports the remount" ;;
*) t_fail "setup reports the remount (said: $(echo "$out" | head -n 3))" ;;
esac
t_note "mount options after: $(opts)"
t_check "favordynmods is on" has favordynmods
t_check "nsdelegate is kept" has nsdelegate
t_check "memory_recursiveprot is kept" has memory_recursiveprot

out=$(c setup 2>&1)
case $out in
*remount*) t_fail "a second setup does not remount again (said: $(echo "$out" | grep remount))" ;;
*"nothing to do"*) t_ok "a second setup has nothing to do" ;;
*) t_fail "a second setup has nothing to do (said: $(echo "$out" | tail -n 1))" ;;
esac

out=$(c --direct status 2>&1)
case $out in
*"favordynmods: on (mount /sys/fs/cgroup, as the board asks)"*) t_ok "status reports favordynmods on" ;;
*) t_fail "status reports favordynmods on (said: $(echo "$out" | grep -i favordynmods))" ;;
esac
json=$(c --direct --json status 2>/dev/null | tr -d ' \n')
case $json in
*'"favordynmods":{"mount":"/sys/fs/cgroup","on":true,"supported":true,"requested":true}'*) t_ok "status --json reports it" ;;
*) t_fail "status --json reports it (got: $(echo "$json" | grep -o '"favordynmods":{[^}]*}'))" ;;
esac

# Off again by hand (busybox's remount keeps the options /proc/mounts shows, so a fresh
# mount of the same hierarchy): status says so and is not in sync (exit 8).
umount $CG && mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $CG
t_check_fails "favordynmods is off after a mount without it" has favordynmods
c --direct status >/dev/null 2>&1
t_eq "status exits 8 when the board asks and the option is off" 8 "$?"

/vmtest/cgqos teardown >/dev/null 2>&1
t_done
