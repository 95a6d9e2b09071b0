# shellcheck shell=bash
# Shared helpers for tests/vm/run.sh, build.sh and suite.sh. Sourced, never executed.
#
# Cache layout under $CGQOS_VM_CACHE (default /var/cache/cgqos-vm):
#   apt/<name>/      private apt states (sources.list, lists, empty dpkg status, apt cache)
#   kernels/<pkg>/   vmlinuz, config, source.txt of one kernel package (symlinks for aliases)
#   busybox/<arch>/  busybox from busybox-static
#   dtb/<hash>.dtb   patched arm64 device trees
#   rust-aarch64/    Debian rustc-web sysroot for aarch64 cross builds
#   logs/            apt output of the last fetches

VM_CACHE=${CGQOS_VM_CACHE:-/var/cache/cgqos-vm}
VM_PROG=${VM_PROG:-cgqos-vm}
VM_VERBOSE=${VM_VERBOSE:-0}
VM_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Results of the fetch functions, read by the scripts that source this file.
# shellcheck disable=SC2034
VM_KERNEL_DIR="" VM_BUSYBOX="" VM_DEB=""

vm_log() { printf '%s: %s\n' "$VM_PROG" "$*" >&2; }
vm_warn() { printf '%s: warning: %s\n' "$VM_PROG" "$*" >&2; }
vm_debug() { if [[ $VM_VERBOSE == 1 ]]; then vm_log "$@"; fi; }
# vm_die STATUS MESSAGE...
vm_die() {
	local rc=$1
	shift
	printf '%s: error: %s\n' "$VM_PROG" "$*" >&2
	exit "$rc"
}

# Quote a string for a POSIX (busybox) shell.
vm_shquote() {
	local s=${1//\'/\'\\\'\'}
	printf "'%s'" "$s"
}

# Run a command with its output in a log file; show the log when it fails (always in verbose
# mode).
vm_logged() {
	local log=$1
	shift
	mkdir -p "$(dirname "$log")"
	if [[ $VM_VERBOSE == 1 ]]; then
		"$@" 2>&1 | tee "$log" >&2
		return "${PIPESTATUS[0]}"
	fi
	if ! "$@" >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		return 1
	fi
}

# Host packages ---------------------------------------------------------------------------

vm_pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# vm_ensure_host_pkgs PKG...: apt-get install what is missing; apt-get update once if needed.
vm_ensure_host_pkgs() {
	local p missing=()
	for p in "$@"; do
		vm_pkg_installed "$p" || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	if [[ $EUID -ne 0 ]]; then
		vm_die 125 "missing host packages: ${missing[*]} (run as root, or install them first)"
	fi
	# One installer at a time among parallel runs; apt also waits for a dpkg lock held by
	# anything else. (Lock order: the cache lock may be held here, never the reverse.)
	mkdir -p "$VM_CACHE" || vm_die 125 "cannot create cache directory $VM_CACHE (set CGQOS_VM_CACHE)"
	local lockfd
	exec {lockfd}>"$VM_CACHE/.host-packages.lock"
	flock "$lockfd"
	missing=()
	for p in "$@"; do
		vm_pkg_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]})); then
		vm_install_host_pkgs "${missing[@]}"
	fi
	exec {lockfd}>&-
}

vm_install_host_pkgs() {
	vm_log "installing host packages: $*"
	local log=$VM_CACHE/logs/apt-host.log t0=$SECONDS
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
	local install=("${apt[@]}" install -y --no-install-recommends "$@")
	if ! compgen -G '/var/lib/apt/lists/*Packages*' >/dev/null; then
		vm_logged "$log.update" "${apt[@]}" update || vm_die 125 "apt-get update failed (log: $log.update)"
	elif vm_logged "$log" "${install[@]}" 2>/dev/null; then
		vm_debug "host packages installed in $((SECONDS - t0)) s"
		return 0
	else
		vm_log "apt-get install failed with the current package lists; running apt-get update"
		vm_logged "$log.update" "${apt[@]}" update || vm_die 125 "apt-get update failed (log: $log.update)"
	fi
	vm_logged "$log" "${install[@]}" || vm_die 125 "could not install host packages $* (log: $log)"
	vm_debug "host packages installed in $((SECONDS - t0)) s"
}

# Cache lock (fetching only; boots do not hold it) ------------------------------------------

# vm_cache_lock [NAME]: one lock per cache area: "guest" (default: kernels, busybox, dtb and
# their apt state) or "rust" (the aarch64 sysroot), so a build and a fetch can overlap.
vm_cache_lock() {
	local lock=$VM_CACHE/.lock-${1:-guest}
	mkdir -p "$VM_CACHE" || vm_die 125 "cannot create cache directory $VM_CACHE (set CGQOS_VM_CACHE)"
	[[ -n ${VM_LOCK_FD:-} ]] && return 0
	exec {VM_LOCK_FD}>"$lock"
	if ! flock -n "$VM_LOCK_FD"; then
		vm_log "waiting for the cache lock $lock"
		flock "$VM_LOCK_FD"
	fi
}

vm_cache_unlock() {
	[[ -n ${VM_LOCK_FD:-} ]] || return 0
	exec {VM_LOCK_FD}>&-
	VM_LOCK_FD=
}

# Private apt state -------------------------------------------------------------------------

# The host's Debian mirror: CGQOS_VM_DEBIAN_MIRROR, else the first plain Debian URI in the
# host's apt sources, else deb.debian.org.
vm_debian_mirror() {
	if [[ -n ${CGQOS_VM_DEBIAN_MIRROR:-} ]]; then
		printf '%s\n' "${CGQOS_VM_DEBIAN_MIRROR%/}"
		return
	fi
	local uri
	uri=$(vm_host_uris | grep -Ev 'security|ports|backports' | grep -E '/debian/?$' | head -n1)
	printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

vm_debian_security_mirror() {
	if [[ -n ${CGQOS_VM_DEBIAN_SECURITY_MIRROR:-} ]]; then
		printf '%s\n' "${CGQOS_VM_DEBIAN_SECURITY_MIRROR%/}"
		return
	fi
	local uri
	uri=$(vm_host_uris | grep -E '/debian-security/?$' | head -n1)
	printf '%s\n' "${uri:-http://deb.debian.org/debian-security}"
}

# Every URI of the host's apt sources, one a line (one-line and deb822 formats).
vm_host_uris() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		sed -nE 's/^URIs:[[:space:]]*//p' "$f" | tr ' ' '\n'
	done | sed -e 's:/*$::' -e '/^$/d'
}

# vm_apt_setup NAME "URI SUITE" ...: prepare the private apt state NAME; sets VM_APT (the
# apt-get/apt-cache options). Updates its lists when they are missing or the sources changed.
vm_apt_setup() {
	local name=$1
	shift
	local dir=$VM_CACHE/apt/$name src line
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc/sources.list.d" \
		"$dir/etc/preferences.d"
	[[ -e $dir/status ]] || : >"$dir/status"
	src=""
	for line in "$@"; do
		src+="deb [signed-by=$VM_KEYRING] ${line%% *} ${line#* } main"$'\n'
	done
	if [[ ! -f $dir/etc/sources.list || $(<"$dir/etc/sources.list") != "${src%$'\n'}" ]]; then
		printf '%s' "$src" >"$dir/etc/sources.list"
		rm -f "$dir/updated"
	fi
	VM_APT=(
		-o "Dir::Etc::SourceList=$dir/etc/sources.list"
		-o "Dir::Etc::SourceParts=$dir/etc/sources.list.d"
		-o "Dir::Etc::Preferences=$dir/etc/preferences"
		-o "Dir::Etc::PreferencesParts=$dir/etc/preferences.d"
		-o "Dir::State::Lists=$dir/lists"
		-o "Dir::State::status=$dir/status"
		-o "Dir::Cache=$dir/cache"
		-o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64"
		-o "APT::Sandbox::User=root"
	)
	VM_APT_DIR=$dir
	if [[ ! -e $dir/updated ]]; then
		vm_apt_update
	fi
}

vm_apt_update() {
	vm_ensure_host_pkgs debian-archive-keyring
	vm_log "updating the private package lists in $VM_APT_DIR"
	local t0=$SECONDS
	vm_logged "$VM_CACHE/logs/apt-update-${VM_APT_DIR##*/}.log" \
		apt-get "${VM_APT[@]}" -q --error-on=any update ||
		vm_die 125 "private apt-get update failed (mirror $(vm_debian_mirror); set CGQOS_VM_DEBIAN_MIRROR to override)"
	touch "$VM_APT_DIR/updated"
	vm_debug "private apt-get update took $((SECONDS - t0)) s"
}

# vm_apt_download DIR SPEC [APTOPT...]: download one package (SPEC as apt-get download takes
# it) into DIR; sets VM_DEB to the path of the .deb. Refreshes the lists once per run if apt
# cannot get it (stale lists).
vm_apt_download() {
	local dir=$1 spec=$2
	shift 2
	VM_DEB=""
	mkdir -p "$dir"
	local log=$VM_CACHE/logs/apt-download.log
	rm -f "$dir"/*.deb
	if ! (cd "$dir" && apt-get "${VM_APT[@]}" "$@" -q download "$spec") >"$log" 2>&1; then
		if [[ ${VM_APT_REFRESHED:-} != "$VM_APT_DIR" ]]; then
			VM_APT_REFRESHED=$VM_APT_DIR
			vm_apt_update
			vm_apt_download "$dir" "$spec" "$@"
			return
		fi
		[[ $VM_VERBOSE == 1 ]] && cat "$log" >&2
		return 1
	fi
	VM_DEB=$(find "$dir" -maxdepth 1 -name '*.deb' | head -n1)
	[[ -n $VM_DEB ]]
}

# Kernels -----------------------------------------------------------------------------------

VM_KERNEL_SUITES=(trixie-backports trixie)

# Private apt for guest packages: trixie-backports (preferred), trixie and any extra suites.
vm_apt_guest() {
	local mirror s lines=() extra
	mirror=$(vm_debian_mirror)
	for s in "${VM_KERNEL_SUITES[@]}"; do
		lines+=("$mirror $s")
	done
	# Suites that an earlier --kernel-package NAME/SUITE added stay in the list.
	if [[ -f $VM_CACHE/apt/guest/extra-suites ]]; then
		while read -r extra; do
			[[ -n $extra && " ${lines[*]} " != *" $mirror $extra "* ]] && lines+=("$mirror $extra")
		done <"$VM_CACHE/apt/guest/extra-suites"
	fi
	vm_apt_setup guest "${lines[@]}"
	VM_APT+=(-o "APT::Default-Release=trixie-backports")
}

# vm_kernel_cache_key SPEC: cache directory name of a package spec (NAME[/SUITE][=VERSION]).
vm_kernel_cache_key() {
	local k=$1
	k=${k//\//@}
	k=${k//=/@}
	printf '%s\n' "${k//:/@}"
}

# vm_fetch_kernel SPEC DEBARCH [FALLBACK]: make sure the kernel of SPEC is in the cache;
# sets VM_KERNEL_DIR. If SPEC cannot be downloaded and FALLBACK (a meta package) is given,
# uses FALLBACK with a warning and links SPEC's cache name to the result.
vm_fetch_kernel() {
	local spec=$1 debarch=$2 fallback=${3:-} key dir
	key=$(vm_kernel_cache_key "$spec")
	dir=$VM_CACHE/kernels/$key
	if [[ -f $dir/vmlinuz && -f $dir/config ]]; then
		VM_KERNEL_DIR=$(cd "$dir" && pwd -P)
		return 0
	fi
	vm_cache_lock guest
	if [[ -f $dir/vmlinuz && -f $dir/config ]]; then
		VM_KERNEL_DIR=$(cd "$dir" && pwd -P)
		return 0
	fi
	local suite=""
	if [[ $spec == */* ]]; then
		suite=${spec#*/}
		suite=${suite%%=*}
		mkdir -p "$VM_CACHE/apt/guest"
		grep -qx "$suite" "$VM_CACHE/apt/guest/extra-suites" 2>/dev/null ||
			[[ " ${VM_KERNEL_SUITES[*]} " == *" $suite "* ]] ||
			echo "$suite" >>"$VM_CACHE/apt/guest/extra-suites"
	fi
	rm -rf "$VM_CACHE/kernels"/.fetch.* # left by an interrupted run; we hold the lock
	vm_apt_guest
	local t0=$SECONDS
	if ! vm_fetch_kernel_pkg "$spec" "$debarch"; then
		if [[ -z $fallback ]]; then
			vm_die 125 "cannot download kernel package $spec ($debarch) from $(vm_debian_mirror) (log: $VM_CACHE/logs/apt-download.log)"
		fi
		vm_warn "kernel package $spec is not available any more; falling back to $fallback from trixie-backports"
		vm_fetch_kernel_pkg "$fallback" "$debarch" ||
			vm_die 125 "cannot download kernel package $fallback ($debarch) either (log: $VM_CACHE/logs/apt-download.log)"
		vm_warn "using $VM_KERNEL_RESOLVED (${VM_KERNEL_VERSION}) instead of $spec; its config is checked below"
	fi
	if [[ $VM_KERNEL_RESOLVED != "$key" ]]; then
		[[ -d $dir && ! -L $dir ]] && rm -rf "$dir"
		ln -sfn "$VM_KERNEL_RESOLVED" "$dir"
	fi
	# shellcheck disable=SC2034 # read by run.sh
	VM_KERNEL_DIR=$(cd "$VM_CACHE/kernels/$VM_KERNEL_RESOLVED" && pwd -P)
	vm_log "kernel $VM_KERNEL_RESOLVED $VM_KERNEL_VERSION cached in $((SECONDS - t0)) s"
}

# Download SPEC and, where needed, its linux-image/-binary/-base dependencies (meta packages,
# the split packaging of 7.x) until a vmlinuz and a config are found. Sets VM_KERNEL_RESOLVED
# (the concrete linux-image-<version> package name) and VM_KERNEL_VERSION.
vm_fetch_kernel_pkg() {
	local spec=$1 debarch=$2 tmp queue=() seen=" " depth=0 p deb pkg ver deps d vmlinuz config
	tmp=$(mktemp -d "$VM_CACHE/kernels/.fetch.XXXXXX" 2>/dev/null) ||
		{ mkdir -p "$VM_CACHE/kernels" && tmp=$(mktemp -d "$VM_CACHE/kernels/.fetch.XXXXXX"); }
	VM_KERNEL_RESOLVED=""
	VM_KERNEL_VERSION=""
	queue=("$spec")
	while ((${#queue[@]})) && ((depth < 4)); do
		local next=()
		for p in "${queue[@]}"; do
			local aspec=$p
			if [[ $aspec != *:* ]]; then
				# NAME[/SUITE][=VERSION] -> NAME:ARCH[/SUITE][=VERSION]
				local n=${aspec%%[/=]*}
				aspec="$n:$debarch${aspec#"$n"}"
			fi
			vm_log "downloading $aspec"
			if ! vm_apt_download "$tmp/debs" "$aspec"; then
				rm -rf "$tmp"
				return 1
			fi
			deb=$VM_DEB
			pkg=$(dpkg-deb -f "$deb" Package)
			ver=$(dpkg-deb -f "$deb" Version)
			deps=$(dpkg-deb -f "$deb" Depends)
			if [[ -z $VM_KERNEL_RESOLVED && $pkg =~ ^linux-image-[0-9] ]]; then
				VM_KERNEL_RESOLVED=$pkg
				VM_KERNEL_VERSION=$ver
			fi
			echo "$pkg $ver $debarch" >>"$tmp/source.txt"
			dpkg-deb -x "$deb" "$tmp/root" || { rm -rf "$tmp"; return 1; }
			rm -f "$deb"
			seen+="$pkg "
			# Follow the kernel packages it depends on (first alternative of each).
			while read -r d; do
				d=${d%%|*}
				d=${d%%(*}
				d=${d// /}
				d=${d%%:*}
				[[ $d =~ ^linux-(image|binary|base)- && $d != *-dbg && $seen != *" $d "* ]] || continue
				seen+="$d "
				next+=("$d")
			done < <(tr ',' '\n' <<<"$deps")
		done
		vmlinuz=$(find "$tmp/root/boot" "$tmp/root/usr/lib/modules" "$tmp/root/usr/lib/linux" \
			-maxdepth 2 \( -name 'vmlinuz*' -o -name 'vmlinux-*' -o -name 'Image*' \) -type f 2>/dev/null | head -n1)
		config=$(find "$tmp/root/boot" "$tmp/root/usr/lib/modules" "$tmp/root/usr/lib/linux" \
			-maxdepth 2 \( -name 'config-*' -o -name config \) -type f 2>/dev/null | head -n1)
		[[ -n $vmlinuz && -n $config ]] && break
		queue=("${next[@]}")
		depth=$((depth + 1))
	done
	if [[ -z $vmlinuz || -z $config ]]; then
		vm_warn "no vmlinuz/config found in $spec and its linux-* dependencies"
		rm -rf "$tmp"
		return 1
	fi
	if [[ -z $VM_KERNEL_RESOLVED ]]; then
		VM_KERNEL_RESOLVED=$(vm_kernel_cache_key "$spec")
		VM_KERNEL_VERSION=unknown
	fi
	local out=$VM_CACHE/kernels/$VM_KERNEL_RESOLVED
	mkdir -p "$tmp/out"
	mv "$vmlinuz" "$tmp/out/vmlinuz"
	mv "$config" "$tmp/out/config"
	mv "$tmp/source.txt" "$tmp/out/source.txt"
	rm -rf "$out"
	mv "$tmp/out" "$out"
	rm -rf "$tmp"
}

# vm_check_kernel_config CONFIGFILE: warn about each missing option cgqos relies on.
VM_KERNEL_OPTIONS=(CONFIG_UCLAMP_TASK CONFIG_UCLAMP_TASK_GROUP CONFIG_CPUSETS CONFIG_CGROUP_SCHED)
vm_check_kernel_config() {
	local config=$1 opt missing=()
	for opt in "${VM_KERNEL_OPTIONS[@]}"; do
		grep -q "^$opt=y" "$config" || missing+=("$opt")
	done
	if ((${#missing[@]})); then
		vm_warn "guest kernel $(basename "$(dirname "$config")") lacks ${missing[*]}"
	fi
}

# Busybox -----------------------------------------------------------------------------------

# vm_fetch_busybox DEBARCH: sets VM_BUSYBOX.
vm_fetch_busybox() {
	local debarch=$1 dir=$VM_CACHE/busybox/$1 tmp deb bb
	VM_BUSYBOX=$dir/busybox
	[[ -x $VM_BUSYBOX ]] && return 0
	vm_cache_lock guest
	[[ -x $VM_BUSYBOX ]] && return 0
	vm_apt_guest
	mkdir -p "$VM_CACHE/busybox"
	rm -rf "$VM_CACHE/busybox"/.fetch.*
	tmp=$(mktemp -d "$VM_CACHE/busybox/.fetch.XXXXXX")
	vm_log "downloading busybox-static:$debarch"
	vm_apt_download "$tmp/debs" "busybox-static:$debarch" ||
		{ rm -rf "$tmp"; vm_die 125 "cannot download busybox-static:$debarch"; }
	deb=$VM_DEB
	dpkg-deb -x "$deb" "$tmp/root"
	for bb in "$tmp/root/usr/bin/busybox" "$tmp/root/bin/busybox"; do
		[[ -f $bb ]] && break
	done
	[[ -f $bb ]] || { rm -rf "$tmp"; vm_die 125 "no busybox binary in $deb"; }
	mkdir -p "$dir"
	dpkg-deb -f "$deb" Package Version >"$dir/source.txt"
	mv "$bb" "$VM_BUSYBOX.new"
	chmod 755 "$VM_BUSYBOX.new"
	mv "$VM_BUSYBOX.new" "$VM_BUSYBOX"
	rm -rf "$tmp"
}
