#!/usr/bin/env bash
# Side-by-side proxy benchmark: Portcullis (plain and full pipeline) against
# nginx, HAProxy and Caddy in front of the same upstream, on this machine,
# and against a bare actix-web + awc proxy (examples/bare_proxy.rs), the
# ceiling of the HTTP stack Portcullis is built on.
#
#   bash bench/compare.sh              # full run (about 50 minutes on 2 cores)
#   QUICK=1 bash bench/compare.sh      # one short round, to try the setup
#
# Installs what it needs (wrk, nginx, haproxy, caddy from Debian; oha from
# crates.io), builds Portcullis in release mode, then hands over to
# compare.py, which runs the contenders and writes bench/results/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source .ci/install.sh
need_commands wrk:wrk nginx:nginx haproxy:haproxy caddy:caddy taskset:util-linux
# The packaged daemons must not hold the benchmark ports.
for service in nginx haproxy caddy; do
    as_root systemctl stop "$service" >/dev/null 2>&1 || true
done
if ! command -v oha >/dev/null 2>&1; then
    echo "installing oha (open-loop latency) from crates.io"
    cargo install --quiet --locked oha
fi

cargo build --release --quiet --bin portcullis --example bare_proxy
exec python3 bench/compare.py "$@"
