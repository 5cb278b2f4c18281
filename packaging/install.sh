#!/bin/sh
# Install rl from this source tree, and with --test check it: ruff, mypy and the test suite.
#
#   ./packaging/install.sh          system packages, a venv with rl, `rl` on PATH, the demo image
#   ./packaging/install.sh --test   the same with the test tools, then lint, type-check and test
#
# Safe to run again: packages already there are not reinstalled, the venv is reused.
# As root: venv /opt/rl/venv, link /usr/local/bin/rl. Otherwise: ~/.local/lib/rl/venv and
# ~/.local/bin/rl (system packages through sudo when some are missing).
# RL_VENV and RL_BIN_DIR override those two places (for trying the script without touching them).
set -eu

usage() {
    echo "Usage: $0 [--test]"
    echo "  --test   also install the test tools and run ruff, mypy and pytest"
}

with_tests=0
for arg in "$@"; do
    case "$arg" in
        --test) with_tests=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "Error: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

step() { echo "==> $*"; }
warn() { echo "WARNING: $*" >&2; }
die() { echo "Error: $*" >&2; exit 1; }

cd "$(dirname "$0")/.."
repo=$(pwd)
umask 022 # everything installed must be readable by every user
uid=$(id -u)

# --- system packages -----------------------------------------------------------------------
# rl itself: newuidmap/newgidmap, FUSE (and pyfuse3's build), a Python to make the venv from,
# and busybox-static for the demo image.
packages="uidmap fuse3 libfuse3-dev pkg-config python3-venv python3-dev python3-pip gcc libc6-dev busybox-static"
if [ "$with_tests" = 1 ]; then
    # The tests compare rl with podman/crun/runc/skopeo, push to a local registry, and make
    # network namespaces; the benchmarks also use fuse-overlayfs and slirp4netns.
    packages="$packages docker-registry podman crun runc skopeo iproute2 libseccomp-dev fuse-overlayfs slirp4netns attr openssl"
    # The cgroup v2 + systemd lane (tests/vm) boots a Debian guest built with mmdebstrap;
    # systemd-analyze (package systemd) verifies the units rl generates.
    packages="$packages qemu-system-x86 mmdebstrap systemd"
fi

missing_packages() {
    for pkg in $packages; do
        status=$(dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null || true)
        case "$status" in
            *" installed") ;;
            *) printf '%s ' "$pkg" ;;
        esac
    done
}

as_root() {
    if [ "$uid" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 127
    fi
}

install_packages() {
    missing=$1
    if [ "$uid" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
        die "missing packages: $missing; install them as root (apt-get install $missing) and run this again"
    fi
    step "installing system packages: $missing"
    as_root apt-get update -q || die "apt-get update failed; install these packages by hand: $missing"
    # shellcheck disable=SC2086 # the package list is meant to split into words
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing \
        || die "apt-get install failed; install these packages by hand: $missing"
}

if command -v dpkg-query >/dev/null 2>&1; then
    missing=$(missing_packages)
    missing=${missing% }
    if [ -n "$missing" ]; then
        install_packages "$missing"
    else
        step "system packages already installed"
    fi
else
    warn "not a Debian-like system: make sure these (or your distribution's equivalents) are installed: $packages"
fi

# Unprivileged FUSE mounts and TAP devices need these usable by everyone (stock distributions
# ship them 0666; some fresh VMs have 0600).
if [ "$uid" = 0 ]; then
    for dev in /dev/fuse /dev/net/tun; do
        if [ -e "$dev" ]; then chmod 0666 "$dev"; fi
    done
fi

# --- the venv --------------------------------------------------------------------------------
# Debian's python3 works for every user; a python under root's home (pyenv) would not.
python=/usr/bin/python3
[ -x "$python" ] || die "$python is missing: install python3 (apt-get install python3 python3-venv)"
if [ "$uid" = 0 ]; then
    venv=${RL_VENV:-/opt/rl/venv}
    bin_dir=${RL_BIN_DIR:-/usr/local/bin}
else
    venv=${RL_VENV:-$HOME/.local/lib/rl/venv}
    bin_dir=${RL_BIN_DIR:-$HOME/.local/bin}
fi

venv_is_usable() {
    [ -x "$venv/bin/python" ] && [ -x "$venv/bin/pip" ] \
        && [ "$("$venv/bin/python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null)" = /usr ]
}

if venv_is_usable; then
    step "using the venv in $venv"
else
    step "creating a venv in $venv (from $python)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv" || die "could not create a venv with $python: install python3-venv"
fi

target="."
if [ "$with_tests" = 1 ]; then target=".[test]"; fi
step "installing rl into the venv (pip install --upgrade $target)"
# A non-editable install: rl runs from the venv, not from this tree. setuptools builds in
# ./build, whose leftovers could carry deleted modules into the wheel: start clean.
rm -rf "$repo/build"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade "$target" \
    || die "pip install failed (see above)"
rm -rf "$repo/build"
chmod -R a+rX "$venv"

mkdir -p "$bin_dir"
ln -sfn "$venv/bin/rl" "$bin_dir/rl"
step "linked $bin_dir/rl -> $venv/bin/rl"
case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) warn "$bin_dir is not on your PATH: add it (export PATH=\"$bin_dir:\$PATH\") or run $bin_dir/rl" ;;
esac
rl="$bin_dir/rl"

# rl's Quadlet: a systemd user generator for ~/.config/containers/systemd/*.container files.
generator_dir=${RL_GENERATOR_DIR:-/usr/lib/systemd/user-generators}
if [ "$uid" = 0 ]; then
    mkdir -p "$generator_dir"
    sed "s|@RL_VENV@|$venv|g" "$repo/packaging/systemd/rl-user-generator" >"$generator_dir/rl-user-generator.tmp"
    chmod 0755 "$generator_dir/rl-user-generator.tmp"
    mv "$generator_dir/rl-user-generator.tmp" "$generator_dir/rl-user-generator"
    step "installed the systemd user generator $generator_dir/rl-user-generator"
fi

# --- the demo, or the checks -----------------------------------------------------------------
if [ "$with_tests" = 0 ]; then
    step "rl image create-demo"
    "$rl" image create-demo
    step "rl images"
    "$rl" images
    step "rl run --rm localhost/rl-demo"
    "$rl" run --rm localhost/rl-demo || die "the demo container failed: run \`rl doctor\` to see why"
    step "done: try \`rl run --rm -it localhost/rl-demo sh\`, and \`rl doctor\` to check this host"
    exit 0
fi

failed=""
run_check() {
    name=$1
    shift
    step "$name"
    if "$@"; then :; else failed="${failed:+$failed, }$name"; fi
}

# The tests run the rl installed above (tests/harness.py honours RL_BIN).
export RL_BIN="$venv/bin/rl"
run_check "ruff check" "$venv/bin/ruff" check .
run_check "ruff format --check" "$venv/bin/ruff" format --check .
run_check "mypy" "$venv/bin/mypy"
run_check "pytest" "$venv/bin/python" -m pytest
if [ -n "$failed" ]; then
    echo "==> FAILED: $failed" >&2
    exit 1
fi
step "all checks passed"
