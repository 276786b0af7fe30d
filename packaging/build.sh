#!/usr/bin/env bash
# Builds the release artifacts into target/dist/:
#
#   bash packaging/build.sh          # both
#   bash packaging/build.sh deb      # portcullis_<version>-1_amd64.deb (cargo-deb)
#   bash packaging/build.sh static   # portcullis-<version>-x86_64-linux-musl.tar.gz
#
# Installs what it needs when missing, never prompting: cargo-deb (from
# crates.io), the Rust target x86_64-unknown-linux-musl (rustup), and
# musl-tools (Debian) for the C parts of dependencies. CARGO_TARGET_DIR is
# honoured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source .ci/install.sh

readonly MUSL=x86_64-unknown-linux-musl
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
target_dir="${CARGO_TARGET_DIR:-target}"
dist="$target_dir/dist"
mkdir -p "$dist"

log() { printf '[packaging] %s\n' "$*" >&2; }

build_deb() {
    if ! cargo deb --version >/dev/null 2>&1; then
        log "installing cargo-deb from crates.io"
        cargo install --quiet --locked cargo-deb
    fi
    log "cargo build --release"
    cargo build --release --quiet --bin portcullis
    # The man pages, rendered by the binary from its own --help definitions.
    rm -rf target/man
    "$target_dir/release/portcullis" manual target/man
    gzip -9n target/man/*.1
    mkdir -p target/deb-doc
    gzip -9n <CHANGELOG.md >target/deb-doc/changelog.gz
    log "cargo deb"
    local deb
    deb="$(cargo deb --no-build --quiet --output "$dist/")"
    log "built $deb"
}

build_static() {
    need_rust_targets "$MUSL"
    # ring and mimalloc compile C for the target with musl-gcc.
    need_commands musl-gcc:musl-tools
    log "cargo build --release --target $MUSL"
    cargo build --release --quiet --bin portcullis --target "$MUSL"
    local binary="$target_dir/$MUSL/release/portcullis"
    if ! file "$binary" | grep -Eq 'statically linked|static-pie linked'; then
        log "not a static binary: $(file "$binary")"
        exit 1
    fi
    local name="portcullis-$version-x86_64-linux-musl"
    local stage
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' RETURN
    mkdir "$stage/$name"
    install -s -m 0755 "$binary" "$stage/$name/portcullis"
    install -m 0644 packaging/portcullis.toml "$stage/$name/portcullis.toml"
    install -m 0644 config/portcullis.toml "$stage/$name/portcullis.example.toml"
    install -m 0644 packaging/portcullis.service README.md CHANGELOG.md LICENSE "$stage/$name/"
    tar --sort=name --owner=0 --group=0 --numeric-owner -C "$stage" \
        -czf "$dist/$name.tar.gz" "$name"
    log "built $dist/$name.tar.gz"
}

case "${1:-all}" in
    deb) build_deb ;;
    static) build_static ;;
    all) build_deb && build_static ;;
    *)
        echo "usage: $0 [deb|static|all]" >&2
        exit 2
        ;;
esac
