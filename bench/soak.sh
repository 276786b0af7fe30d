#!/usr/bin/env bash
# Soak of the release build: steady load plus login churn and hostile
# traffic for SOAK_MINUTES (default 30), watching memory and descriptors.
#
#   SOAK_MINUTES=30 bash bench/soak.sh
#
# Installs wrk and nginx from Debian when missing (bench/load-tools.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/load-tools.sh
cargo build --release --quiet --bin portcullis
python3 bench/soak.py target/release/portcullis
