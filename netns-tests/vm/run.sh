#!/usr/bin/env bash
# Run one executable (typically a cargo test binary) as the only program of a
# throwaway QEMU VM booted on a Debian cloud kernel, and exit with its exit code.
#
# Why a VM: the host kernel has no ipip (and no loadable modules at all), so
# tests that need tunl0 cannot run on the host. See netns-tests/vm/README.md.
#
# Usage: netns-tests/vm/run.sh BINARY [ARGS...]
#
# Environment:
#   PODROUTE_VM_CACHE       kernel cache dir (default /var/cache/podroute-vm)
#   PODROUTE_VM_TIMEOUT     seconds before the VM is killed (default 900)
#   PODROUTE_VM_MEM         guest memory in MiB (default 2048)
#   PODROUTE_VM_EXTRA_BINS  space-separated executables to add at their host
#                           path, with their libraries (e.g. the agent binary
#                           that an integration test spawns)
#   PODROUTE_VM_PASS_ENV    space-separated extra variable names to pass in
#   PODROUTE_REQUIRE_ROOT_TESTS, RUST_TEST_THREADS, RUST_LOG are passed through.
set -euo pipefail

readonly MARKER=PODROUTE-VM-EXIT
readonly GUEST_PATH=/sbin:/usr/sbin:/bin:/usr/bin
readonly CACHE=${PODROUTE_VM_CACHE:-/var/cache/podroute-vm}
readonly TIMEOUT=${PODROUTE_VM_TIMEOUT:-900}
readonly MEM=${PODROUTE_VM_MEM:-2048}
# Modules to load in the guest; their dependencies are added from modules.dep.
readonly MODULES=(ipip vxlan veth bridge)
readonly OPTIONAL_MODULES=(dummy)
# Host packages this script needs (Debian names).
readonly PACKAGES=(qemu-system-x86 busybox-static cpio kmod iproute2 binutils)

log() { printf 'podroute-vm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ $# -lt 1 ]]; then
    echo "usage: $0 BINARY [ARGS...]" >&2
    exit 2
fi
[[ -f $1 && -x $1 ]] || die "not an executable file: $1"
BINARY=$(realpath "$1")
shift

WORK=$(mktemp -d /tmp/podroute-vm.XXXXXX)
QEMU_PID=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    # Stop a VM still running (timeout passes the signal on to qemu).
    if [[ -n $QEMU_PID ]]; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap removes the work dir.
trap 'exit 130' INT
trap 'exit 143' TERM

# --- host packages ---------------------------------------------------------

apt_install() {
    # Wait for a dpkg lock held by a concurrent apt-get instead of failing.
    local opts=(-y --no-install-recommends -o DPkg::Lock::Timeout=600)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install "${opts[@]}" "$@"; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update
        apt-get install "${opts[@]}" "$@"
    fi
}

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
            missing+=("$p")
        fi
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

# --- kernel (cached) -------------------------------------------------------

# Prints the package the metapackage linux-image-cloud-amd64 depends on, e.g.
# linux-image-6.1.0-56-cloud-amd64 (candidate version only, one package).
kernel_package() {
    apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-cloud-amd64\).*/\1/p' |
        head -n1
}

# Populates $CACHE/kernel with boot/vmlinuz-<release>, lib/modules/<release>
# (depmod'ed) and a RELEASE file. Reused as is when already there: delete
# $CACHE to move to a newer kernel.
ensure_kernel() {
    mkdir -p "$CACHE"
    # Serialise concurrent runs that would all populate the cache.
    exec 9>"$CACHE/.lock"
    flock 9
    if [[ -s $CACHE/kernel/RELEASE ]]; then
        exec 9>&-
        return
    fi

    local pkg
    pkg=$(kernel_package)
    if [[ -z $pkg ]]; then
        log "no linux-image-cloud-amd64 in the apt lists; running apt-get update"
        apt-get update
        pkg=$(kernel_package)
    fi
    [[ -n $pkg ]] || die "cannot resolve the package behind linux-image-cloud-amd64"
    local release=${pkg#linux-image-}

    log "downloading $pkg"
    local dl=$WORK/download
    mkdir -p "$dl"
    if ! (cd "$dl" && apt-get download -o APT::Sandbox::User=root "$pkg"); then
        log "download failed; running apt-get update and retrying"
        apt-get update
        (cd "$dl" && apt-get download -o APT::Sandbox::User=root "$pkg")
    fi

    # Build in a temporary dir inside the cache and rename it into place,
    # so an interrupted run never leaves a half-filled cache behind.
    local new
    new=$(mktemp -d "$CACHE/.new.XXXXXX")
    dpkg-deb -x "$dl"/"$pkg"_*.deb "$new"
    # Newer packages ship /usr/lib/modules; depmod -b wants <base>/lib/modules.
    if [[ ! -d $new/lib/modules && -d $new/usr/lib/modules ]]; then
        ln -s usr/lib "$new/lib"
    fi
    [[ -f $new/boot/vmlinuz-$release ]] || die "no boot/vmlinuz-$release in $pkg"
    depmod -b "$new" "$release"
    echo "$release" >"$new/RELEASE"
    rm -rf "$CACHE/kernel"
    mv "$new" "$CACHE/kernel"
    rm -rf "$dl"
    exec 9>&-
}

# --- initramfs -------------------------------------------------------------

ROOT=$WORK/root

# Copies a file to the same path under $ROOT (following symlinks).
copy_file() {
    local src=$1 dst=${2:-$1}
    mkdir -p "$ROOT$(dirname "$dst")"
    cp -L "$src" "$ROOT$dst"
}

# Copies an ELF executable to $dst under $ROOT plus the shared libraries that
# ldd lists (at their host paths, incl. the /lib64 dynamic loader). Debug info
# is stripped (symbols stay for backtraces): debug test binaries are mostly
# DWARF, and the unpacked initramfs lives in the guest's RAM.
copy_elf() {
    local src=$1 dst=${2:-$1} lib
    copy_file "$src" "$dst"
    strip --strip-debug "$ROOT$dst"
    # ldd exits non-zero for static executables: nothing to add then.
    for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true); do
        [[ -e $ROOT$lib ]] || copy_file "$lib"
    done
}

# Single-quotes a string for the guest's shell.
shquote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

build_initramfs() {
    local release=$1 kroot=$CACHE/kernel
    shift # the rest: arguments for the binary
    local d
    for d in bin sbin usr/bin usr/sbin lib etc proc sys dev run tmp var root; do
        mkdir -p "$ROOT/$d"
    done
    ln -s ../run "$ROOT/var/run"

    # Programs that must not be shadowed by busybox applets of the same name.
    local -A taken=()
    local tool path
    for tool in ip bridge; do
        path=$(PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$tool") ||
            die "$tool not found (package iproute2)"
        copy_elf "$path" "/sbin/$tool"
        taken[$tool]=1
    done
    if [[ -x /usr/bin/ping ]]; then
        copy_elf /usr/bin/ping
        taken[ping]=1
    fi
    # /bin/sh: Debian's busybox runs its own applets before searching PATH
    # (so `sh -c "ip netns ..."` would get busybox ip, which has no netns
    # support). dash searches PATH, so use it when the host has it.
    if [[ -x /usr/bin/dash || -x /bin/dash ]]; then
        copy_elf "$(command -v dash)" /bin/sh
        taken[sh]=1
    fi

    copy_elf "$BINARY"
    local extra
    for extra in ${PODROUTE_VM_EXTRA_BINS:-}; do
        [[ -x $extra ]] || die "PODROUTE_VM_EXTRA_BINS: not an executable: $extra"
        copy_elf "$(realpath "$extra")"
        taken[$(basename "$extra")]=1
    done

    copy_file /bin/busybox /bin/busybox
    local applet
    for applet in $(/bin/busybox --list); do
        [[ -n ${taken[$applet]:-} || -e $ROOT/bin/$applet ]] && continue
        ln -s busybox "$ROOT/bin/$applet"
    done

    # Kernel modules: modprobe --show-depends lists a module's dependency
    # chain in load order ("insmod /path/x.ko" lines, "builtin x" for
    # built-ins). Copied at their real paths with modules.* so that a
    # `modprobe` run by the tests finds them too.
    local moddir=/lib/modules/$release
    mkdir -p "$ROOT$moddir" "$ROOT/etc/podroute-vm"
    cp "$kroot$moddir"/modules.* "$ROOT$moddir/"
    local mod deps ko order=() seen=" "
    for mod in "${MODULES[@]}" "${OPTIONAL_MODULES[@]}"; do
        if ! deps=$(modprobe -d "$kroot" -S "$release" --show-depends "$mod" 2>/dev/null); then
            if [[ " ${MODULES[*]} " == *" $mod "* ]]; then
                die "module $mod not found in $release"
            fi
            log "optional module $mod not available, skipped"
            continue
        fi
        while read -r ko; do
            ko=${ko#"$kroot"}
            [[ $seen == *" $ko "* ]] && continue
            seen+="$ko "
            copy_file "$kroot$ko" "$ko"
            order+=("$ko")
        done < <(awk '$1 == "insmod" { print $2 }' <<<"$deps")
    done
    printf '%s\n' "${order[@]}" >"$ROOT/etc/podroute-vm/modules"

    # Minimal /etc; glibc 2.34+ has the "files" NSS backend built in.
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
    printf 'root:x:0:\n' >"$ROOT/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files\n' >"$ROOT/etc/nsswitch.conf"
    printf '127.0.0.1 localhost podroute-vm\n::1 localhost\n' >"$ROOT/etc/hosts"
    # Protocol/table names, so `ip route` prints what it prints on a node.
    [[ -d /etc/iproute2 ]] && cp -rL /etc/iproute2 "$ROOT/etc/"

    # The command line and environment of the binary, quoted for /init.
    local cmd name
    cmd="env -i PATH=$GUEST_PATH HOME=/tmp RUST_BACKTRACE=1 PODROUTE_IN_VM=1"
    for name in PODROUTE_REQUIRE_ROOT_TESTS RUST_TEST_THREADS RUST_LOG ${PODROUTE_VM_PASS_ENV:-}; do
        [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad variable name: $name"
        if [[ -n ${!name+set} ]]; then
            cmd+=" $name=$(shquote "${!name}")"
        fi
    done
    cmd+=" $(shquote "$BINARY")"
    local arg
    for arg in "$@"; do cmd+=" $(shquote "$arg")"; done

    # /init runs under busybox sh; it calls iproute2 by full path because
    # busybox sh would run its own `ip` applet.
    cat >"$ROOT/init" <<EOF
#!/bin/busybox sh
export PATH=$GUEST_PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# tmpfs on /run and /tmp, keeping what the initramfs put there (the binary
# keeps its host path, which may well be under /tmp).
for dir in /run /tmp; do
    mv "\$dir" /.old
    mkdir "\$dir"
    mount -t tmpfs tmpfs "\$dir"
    cp -a /.old/. "\$dir/"
    rm -rf /.old
done
chmod 1777 /tmp
mkdir -p /run/netns
exec </dev/console >/dev/console 2>&1
hostname podroute-vm
while read -r ko; do
    insmod "\$ko" || echo "podroute-vm: insmod \$ko failed"
done </etc/podroute-vm/modules
/sbin/ip link set lo up
cd /tmp
$cmd
rc=\$?
echo
echo "$MARKER=\$rc"
sync
# Give the serial port time to drain before the power goes.
sleep 1
poweroff -f
EOF
    chmod 755 "$ROOT/init"

    # newc cpio as root:root; gzip -1 since the guest decompresses it anyway.
    (cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 >"$WORK/initrd.gz"
}

# --- main ------------------------------------------------------------------

ensure_packages
ensure_kernel
RELEASE=$(cat "$CACHE/kernel/RELEASE")
build_initramfs "$RELEASE" "$@"
log "kernel $RELEASE, initramfs $(du -h "$WORK/initrd.gz" | cut -f1), booting (timeout ${TIMEOUT}s)"

# Serial console on stdio, stdin from /dev/null so qemu never touches a
# terminal. Not -nographic: that also turns on SeaBIOS's serial console, whose
# screen-clearing escapes would land in the log; -display none -serial stdio
# -monitor none is otherwise the same. -nic none: no NIC (and no iPXE ROM).
# TCG only: KVM hangs on the machines this runs on.
qemu_cmd=(
    qemu-system-x86_64 -accel tcg -m "$MEM" -smp 2
    -kernel "$CACHE/kernel/boot/vmlinuz-$RELEASE" -initrd "$WORK/initrd.gz"
    -append "console=ttyS0 quiet panic=-1"
    -display none -serial stdio -monitor none -no-reboot -nic none -vga none
)
# qemu runs in the background and we `wait` for it: a trapped INT/TERM then
# interrupts the wait at once, and cleanup stops the VM (`timeout` makes its
# own process group, so a Ctrl-C on the terminal would not reach it).
mkfifo "$WORK/console"
sed -u 's/\r//g' <"$WORK/console" | tee "$WORK/console.log" &
reader_pid=$!
timeout --kill-after=10 "$TIMEOUT" "${qemu_cmd[@]}" </dev/null >"$WORK/console" 2>&1 &
QEMU_PID=$!
qemu_rc=0
wait "$QEMU_PID" || qemu_rc=$?
QEMU_PID=
wait "$reader_pid" || true

code=$(grep -a -o "$MARKER=[0-9]*" "$WORK/console.log" | tail -n1 | cut -d= -f2 || true)
if [[ -z $code ]]; then
    if [[ $qemu_rc -eq 124 ]]; then
        log "FAILED: VM timed out after ${TIMEOUT}s without reporting an exit code"
    else
        log "FAILED: VM stopped (qemu exit $qemu_rc) without reporting an exit code (kernel panic? init crash?)"
    fi
    exit 1
fi
log "binary exited with $code"
exit "$code"
