# Sourced by the test, bench and packaging scripts: installs what they need
# when it is missing, never prompting (CI=true, no terminal).
#
#   need_packages PKG...          Debian packages, by name
#   need_commands CMD:PKG...      the package PKG when the command CMD is missing
#   need_rust_components NAME...  rustup components of the active toolchain
#   need_rust_targets TRIPLE...   rustup targets of the active toolchain

# Runs a command as root: directly when already root, else through sudo
# without a password prompt.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "error: need root (or passwordless sudo) to run: $*" >&2
        return 1
    fi
}

_apt_updated=0
_apt_install() {
    echo "installing Debian packages: $*" >&2
    if [ "$_apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_packages() {
    local missing=() pkg
    if ! command -v dpkg >/dev/null 2>&1; then
        echo "warning: not a Debian system; make sure these are installed: $*" >&2
        return 0
    fi
    for pkg in "$@"; do
        if [[ "$(dpkg -s "$pkg" 2>/dev/null || true)" != *"Status: install ok installed"* ]]; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        _apt_install "${missing[@]}"
    fi
}

need_commands() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        need_packages "${missing[@]}"
    fi
}

# _need_rustup KIND NAME...: adds the rustup components or targets (KIND)
# that are not installed yet.
_need_rustup() {
    local kind="$1" missing=() name installed
    shift
    if ! command -v rustup >/dev/null 2>&1; then
        echo "warning: rustup not found; make sure these are installed: $*" >&2
        return 0
    fi
    installed="$(rustup "$kind" list --installed)"
    for name in "$@"; do
        if ! grep -q "^${name}\(-\|$\)" <<<"$installed"; then
            missing+=("$name")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        rustup "$kind" add "${missing[@]}"
    fi
}

need_rust_components() { _need_rustup component "$@"; }
need_rust_targets() { _need_rustup target "$@"; }
