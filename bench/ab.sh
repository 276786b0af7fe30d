#!/usr/bin/env bash
# Interleaved A/B of the full pipeline: a base revision against the working
# tree, each built in release mode, taking turns under the same load.
#
#   bash bench/ab.sh [BASE_REV]          # default: origin/main, else HEAD~1
#   ROUNDS=10 bash bench/ab.sh main~3
#
# Installs wrk and nginx from Debian when missing (bench/load-tools.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

base_rev="${1:-$(git rev-parse --verify -q origin/main || git rev-parse HEAD~1)}"
source bench/load-tools.sh

# A CARGO_TARGET_DIR set by the caller holds both builds.
target="${CARGO_TARGET_DIR:-$PWD/target}"
base_dir="$(mktemp -d)"
trap 'git worktree remove --force "$base_dir" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$base_dir" "$base_rev" >/dev/null
echo "building base $(git rev-parse --short "$base_rev") and the working tree"
CARGO_TARGET_DIR="$target/ab-base" cargo build --release --quiet --manifest-path "$base_dir/Cargo.toml" --bin portcullis
CARGO_TARGET_DIR="$target" cargo build --release --quiet --bin portcullis
python3 bench/ab.py "$target/ab-base/release/portcullis" "$target/release/portcullis"
