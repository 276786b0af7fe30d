#!/usr/bin/env bash
# Browser end-to-end tests of the admin console, in Debian's headless
# Chromium against the real release binary and a real upstream.
#
#   tests/e2e/run.sh            # from anywhere; no prompts, exits non-zero on failure
#
# What it does:
#   1. installs what is missing: Debian's chromium (apt-get, through
#      `sudo -n` when not root) and the npm packages of package-lock.json
#      (`npm ci`); no browser is ever downloaded — Playwright drives the
#      Debian one;
#   2. builds the release binary (`cargo build --release --bin portcullis`);
#   3. starts the echo upstream (lib/upstream.mjs) and the gateway on free
#      loopback ports with a temporary configuration and storage directory;
#   4. reads <storage>/initial-admin-password, written on first start;
#   5. runs the scenarios (*.test.mjs, node:test), which save a full-page
#      screenshot of every page at 1280x800 and 390x844 to screenshots/.
#
# Environment: CHROMIUM (default /usr/bin/chromium), CARGO_TARGET_DIR (as
# for cargo), E2E_KEEP=1 keeps the temporary directory for a look at the
# gateway's log.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export DEBIAN_FRONTEND=noninteractive
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

log() { printf '[e2e] %s\n' "$*" >&2; }

source "$repo/.ci/install.sh"

# ---- 1. what the tests need --------------------------------------------------

[ -x "$CHROMIUM" ] || need_packages chromium
# Text in the screenshots needs at least one font.
need_packages fonts-dejavu-core
need_commands node:nodejs npm:npm

cd "$here"
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.e2e-installed-lock; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.e2e-installed-lock
fi

# ---- 2. the binary -----------------------------------------------------------

log "cargo build --release --bin portcullis"
(cd "$repo" && cargo build --release --bin portcullis)
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
bin="$target_dir/release/portcullis"
[ -x "$bin" ] || { log "no binary at $bin"; exit 1; }

# ---- 3. upstream and gateway -------------------------------------------------

work="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-e2e.XXXXXX")"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${E2E_KEEP:-}" = 1 ] || [ "$status" != 0 ]; then
    log "gateway log and config kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node "$here/lib/upstream.mjs" >"$work/upstream.port" 2>"$work/upstream.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
upstream_port="$(head -n1 "$work/upstream.port")"
[ -n "$upstream_port" ] || { log "the upstream did not start"; exit 1; }

# Three free loopback ports: proxy, admin, and one nobody listens on (the
# upstream of a route whose upstream is down).
read -r proxy_port admin_port dead_port < <(node "$here/lib/free-ports.mjs" 3)

storage="$work/storage"
config="$work/portcullis.toml"
cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$proxy_port"
rate_limit = "per-client"

[admin]
listen = "127.0.0.1:$admin_port"

[storage]
path = "$storage"

[log]
level = "info"
format = "json"

[session]
# Plain HTTP on loopback: cookies without Secure.
secure = false

[login]
# Low per-user limit so the 429 scenario is quick; a high per-address one
# because every test logs in from 127.0.0.1.
max_failures_per_user = 3
max_failures_per_ip = 1000

[rate_limits.per-client]
key = ["ip"]
limit = 10000
window = "1m"

[[routes]]
id = "public"
path = "/public/*"
upstream = "http://127.0.0.1:$upstream_port"
auth = "public"

[[routes]]
id = "protected"
path = "/protected/*"
upstream = "http://127.0.0.1:$upstream_port"

[upstreams.api]
targets = ["http://127.0.0.1:$upstream_port", { url = "http://127.0.0.1:$dead_port", weight = 2 }]

[upstreams.api.health]
path = "/healthz"
interval = "500ms"

[[routes]]
id = "balanced"
path = "/balanced/*"
upstream = "api"
auth = "public"

[[routes]]
id = "down"
path = "/down/*"
upstream = "http://127.0.0.1:$dead_port"
auth = "public"
timeout = "2s"
EOF

log "starting the gateway: proxy 127.0.0.1:$proxy_port, admin 127.0.0.1:$admin_port"
"$bin" serve --config "$config" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")

# ---- 4. the initial admin password -------------------------------------------

password_file="$storage/initial-admin-password"
for _ in $(seq 300); do
  [ -s "$password_file" ] && break
  kill -0 "$gateway_pid" 2>/dev/null || { log "the gateway exited:"; tail -n 40 "$work/gateway.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$password_file" ] || { log "no $password_file after 30 s"; tail -n 40 "$work/gateway.log" >&2; exit 1; }
node "$here/lib/wait-http.mjs" "http://127.0.0.1:$admin_port/healthz" "http://127.0.0.1:$proxy_port/public/ready"

# ---- 5. the scenarios --------------------------------------------------------

export E2E_ADMIN_URL="http://127.0.0.1:$admin_port"
export E2E_PROXY_URL="http://127.0.0.1:$proxy_port"
export E2E_UPSTREAM_URL="http://127.0.0.1:$upstream_port"
export E2E_STORAGE="$storage"
export E2E_WEB_ADMIN="$repo/web-admin"
export E2E_SCREENSHOTS="$here/screenshots"

log "running the scenarios"
status=0
node --test --test-concurrency=1 --test-reporter=spec "$here"/*.test.mjs || status=$?
if [ "$status" != 0 ]; then
  log "failed; the gateway's last lines:"
  tail -n 30 "$work/gateway.log" >&2 || true
fi
exit "$status"
