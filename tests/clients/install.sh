#!/usr/bin/env bash
# Installs the real client programs that the integration tests run against (Debian packages):
#   dbus-daemon, dbus-bin   dbus-daemon and dbus-send, for the D-Bus API tests (tests/dbus.rs)
#   chromium-headless-shell a real Chromium (browser, zygote, renderers), tests/chromium.rs
#   qemu-system-x86         a real VM monitor for `vm attach` (tests/vm_attach.rs); the
#                           real-kernel suite uses it too
# Idempotent: a package already installed is not touched. Needs root (apt-get); without root
# it only reports what is missing. See docs/testing.md, "Tests against real client programs".
set -euo pipefail

packages=(dbus-daemon dbus-bin chromium-headless-shell qemu-system-x86)
missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
	echo "tests/clients/install.sh: all client programs present"
	exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
	echo "tests/clients/install.sh: missing ${missing[*]} (install them as root with apt-get)" >&2
	exit 1
fi
echo "tests/clients/install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
