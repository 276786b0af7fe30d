#!/usr/bin/env bash
# Soak of the release build: steady load plus login churn and hostile
# traffic for SOAK_MINUTES (default 30), watching memory and descriptors.
#
#   SOAK_MINUTES=30 bash bench/soak.sh
#
# Installs wrk and nginx from Debian when missing (like compare.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}
missing=()
for tool in wrk:wrk nginx:nginx taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
as_root systemctl stop nginx >/dev/null 2>&1 || true
cargo build --release --quiet --bin portcullis
python3 bench/soak.py target/release/portcullis
