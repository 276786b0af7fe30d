#!/usr/bin/env bash
# What sharing state through Redis costs and how well it holds: the full
# pipeline on sled and on Redis against nginx, three nodes sharing one
# limit, and how fast a logout on one node reaches the others. See
# bench/shared_state.py; about 6 minutes on 2 cores.
#
#   bash bench/shared_state.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source .ci/install.sh
need_commands wrk:wrk nginx:nginx redis-server:redis-server taskset:util-linux
as_root systemctl stop nginx >/dev/null 2>&1 || true
if ! command -v oha >/dev/null 2>&1; then
    echo "installing oha (open-loop latency) from crates.io"
    cargo install --quiet --locked oha
fi
cargo build --release --quiet --bin portcullis
exec python3 bench/shared_state.py "$@"
