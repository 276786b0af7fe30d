#!/usr/bin/env bash
# The packaging tests: builds the .deb and the static tarball
# (packaging/build.sh), then checks what a newcomer would get.
#
#   bash tests/packaging/run.sh
#
#   .deb     its files (dpkg-deb -c), control data and conffiles, the
#            maintainer scripts, lintian's verdict, and the systemd unit
#            (systemd-analyze verify against the unpacked package);
#            With CI=true or PORTCULLIS_TEST_DPKG=1, also installs it for
#            real (tests/packaging/dpkg.sh): first start, console login, a
#            proxied request, upgrade, remove and purge;
#   tarball  a fully static binary (file, ldd) that prints its version and
#            commit, accepts the shipped configuration, and serves: /readyz
#            answers 200 and a request proxies through to a real upstream.
#
# Installs what it needs when missing (lintian, python3 for the upstream);
# never prompts. Exits non-zero on the first failed check.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
source .ci/install.sh

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

CHECKS_NAME=packaging
source tests/packaging/checks.sh

need_commands lintian:lintian python3:python3 curl:curl man:man-db

log "building the artifacts"
bash packaging/build.sh
target_dir="${CARGO_TARGET_DIR:-target}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
deb="$(ls "$target_dir"/dist/portcullis_"$version"*_amd64.deb)"
tarball="$target_dir/dist/portcullis-$version-x86_64-linux-musl.tar.gz"

# ---- the .deb ----------------------------------------------------------------

log "checking $deb"
contents="$(dpkg-deb -c "$deb")"
expect "the package installs the systemd unit" ' \./(usr/)?lib/systemd/system/portcullis\.service$' "$contents"
for path in ./usr/bin/portcullis ./etc/portcullis/portcullis.toml ./etc/logrotate.d/portcullis \
    ./usr/share/man/man1/portcullis.1.gz ./usr/share/doc/portcullis/README.md \
    ./usr/share/doc/portcullis/portcullis.example.toml ./usr/share/doc/portcullis/copyright; do
    expect "the package installs $path" " ${path//./\\.}\$" "$contents"
done
expect "the binary is executable" '^-rwxr-xr-x .* \./usr/bin/portcullis$' "$contents"
expect "the configuration is not world-readable" '^-rw-r----- .* \./etc/portcullis/portcullis\.toml$' "$contents"
refute "nothing is installed under /var/lib" ' \./var/lib/' "$contents"

expect "the Debian changelog is for this version" "^portcullis \\($version-1\\) " "$(head -n1 packaging/deb/changelog)"

info="$(dpkg-deb -I "$deb")"
expect "the package is named and versioned" "Package: portcullis" "$info"
expect "it depends on libc6 and adduser" "Depends: .*libc6.*adduser|Depends: .*adduser.*libc6" "$info"
for script in postinst prerm postrm; do
    expect "it has a $script" " $script +#!/bin/sh" "$info"
done
control="$work/control"
dpkg-deb -e "$deb" "$control"
expect "the configuration is a conffile" '^/etc/portcullis/portcullis\.toml$' "$(cat "$control/conffiles")"
postinst="$(cat "$control/postinst")"
expect "postinst creates the portcullis system user" 'adduser --system' "$postinst"
# The user exists before the service is started.
user_line="$(grep -n 'adduser --system' "$control/postinst" | head -n1 | cut -d: -f1)"
start_line="$(grep -n 'deb-systemd-invoke \$_dh_action' "$control/postinst" | head -n1 | cut -d: -f1)"
[ "$user_line" -lt "$start_line" ] || fail "postinst starts the service before it creates its user"
pass "postinst creates the user before it starts the service"
expect "postinst enables the service" 'deb-systemd-helper .*enable portcullis\.service' "$postinst"
expect "postinst restarts the service after an upgrade" '_dh_action=restart' "$postinst"
expect "postinst says where the first admin password is" '/var/lib/portcullis/initial-admin-password' "$postinst"
postrm="$(cat "$control/postrm")"
expect "purging removes the data" 'purge.*' "$postrm"
expect "purging removes /var/lib/portcullis" 'rm -rf /var/lib/portcullis' "$postrm"
expect "purging removes the user" 'deluser --system' "$postrm"
for script in postinst postrm prerm; do
    if [ -f "$control/$script" ]; then
        sh -n "$control/$script" || fail "$script is not valid sh"
        pass "$script parses as sh"
    fi
done
expect "the man page renders" 'portcullis +- +Single-node +API +gateway' \
    "$(MANWIDTH=100 man -l target/man/portcullis.1.gz 2>/dev/null || true)"

log "lintian"
lintian_out="$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)"
printf '%s\n' "$lintian_out" | sed 's/^/    /'
refute "lintian reports no errors" '^E: ' "$lintian_out"

log "systemd-analyze verify"
root="$work/root"
dpkg-deb -x "$deb" "$root"
unit=""
for candidate in "$root"/usr/lib/systemd/system/portcullis.service "$root"/lib/systemd/system/portcullis.service; do
    [ -f "$candidate" ] && unit="$candidate" && break
done
[ -n "$unit" ] || fail "no unit in the package"
for key in 'User=portcullis' 'StateDirectory=portcullis' 'ExecReload=/bin/kill -HUP \$MAINPID' \
    'Restart=on-failure' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' \
    'PrivateTmp=yes' 'PrivateDevices=yes' 'RestrictAddressFamilies=' \
    'SystemCallFilter=@system-service' 'AmbientCapabilities=CAP_NET_BIND_SERVICE$'; do
    expect "the unit sets $key" "^$key" "$(cat "$unit")"
done
# verify looks for the executables at their installed paths: let it find them.
verify_dir="$work/verify"
mkdir -p "$verify_dir"
sed -e "s#/usr/bin/portcullis#$root/usr/bin/portcullis#g" "$unit" >"$verify_dir/portcullis.service"
# It also checks that the man page the unit names exists: in the package.
verify="$(MANPATH="$root/usr/share/man" SYSTEMD_LOG_LEVEL=notice \
    systemd-analyze verify "$verify_dir/portcullis.service" 2>&1 || echo "exit status $?")"
printf '%s\n' "$verify" | sed 's/^/    /'
refute "systemd-analyze verify finds nothing wrong" 'portcullis\.service|exit status' "$verify"
exposure="$(systemd-analyze security --offline=yes --no-pager "$verify_dir/portcullis.service" 2>&1 |
    sed -n 's/.*Overall exposure level for portcullis.service: \([0-9.]*\).*/\1/p')"
log "systemd-analyze security: exposure $exposure (0 is the least exposed, 10 the most)"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }' ||
    fail "the unit's exposure rose to ${exposure:-?} (1.5 when this check was written)"
pass "systemd-analyze security rates the unit's exposure ${exposure} (at most 2.0)"

# The package's life on this machine: install, start, upgrade, remove,
# purge. It changes the system, so only on a disposable one.
if [ "${CI:-}" = true ] || [ "${PORTCULLIS_TEST_DPKG:-}" = 1 ]; then
    log "installing the package for real (tests/packaging/dpkg.sh)"
    bash tests/packaging/dpkg.sh "$deb"
    pass "the package installs, serves, upgrades, removes and purges"
else
    log "SKIPPED installing the package (CI=true or PORTCULLIS_TEST_DPKG=1 runs it; it changes the system)"
fi

# ---- the static binary ---------------------------------------------------------

log "checking $tarball"
listing="$(tar -tzf "$tarball")"
for file in portcullis portcullis.toml portcullis.example.toml portcullis.service README.md; do
    expect "the tarball holds $file" "^portcullis-$version-x86_64-linux-musl/$file\$" "$listing"
done
tar -xzf "$tarball" -C "$work"
dir="$work/portcullis-$version-x86_64-linux-musl"
expect "file says it is statically linked" 'statically linked|static-pie linked' "$(file "$dir/portcullis")"
expect "ldd says it is not dynamic" 'not a dynamic executable|statically linked' "$(ldd "$dir/portcullis" 2>&1 || true)"
expect "--version names the version and the commit" "^portcullis $version \\(commit $commit\\)\$" "$("$dir/portcullis" --version)"
expect "the shipped configuration is valid" 'valid \(prod profile' "$("$dir/portcullis" check --config "$dir/portcullis.toml")"

upstream_port="$(free_port)"
mkdir -p "$work/upstream/app"
echo "hello from the upstream" >"$work/upstream/app/hello.txt"
python3 -m http.server "$upstream_port" --bind 127.0.0.1 --directory "$work/upstream" \
    >"$work/upstream.log" 2>&1 &
pids+=($!)

proxy_port="$(free_port)"
admin_port="$(free_port)"
token="packaging-test-token-$RANDOM$RANDOM$RANDOM"
(
    cd "$dir"
    PORTCULLIS_SERVER__LISTEN="127.0.0.1:$proxy_port" \
        PORTCULLIS_ADMIN__LISTEN="127.0.0.1:$admin_port" \
        PORTCULLIS_ADMIN__TOKEN="$token" \
        PORTCULLIS_STORAGE__PATH="$work/data" \
        exec ./portcullis serve --config portcullis.toml
) >"$work/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")

ready=""
for _ in $(seq 1 100); do
    if ready="$(curl -fsS "http://127.0.0.1:$admin_port/readyz" 2>/dev/null)"; then break; fi
    kill -0 "$gateway" 2>/dev/null || fail "the gateway exited: $(cat "$work/gateway.log")"
    sleep 0.1
done
expect "/readyz answers 200, ready" '"status":"ready"' "$ready"
expect "the first start says where the admin password is" \
    "initial-admin-password" "$(cat "$work/gateway.log")"
[ -s "$work/data/initial-admin-password" ] || fail "no initial-admin-password file"
pass "the initial admin password file exists"

route="$(curl -sS -X POST "http://127.0.0.1:$admin_port/admin/api/routes" \
    -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d "{\"id\":\"app\",\"path\":\"/app/*\",\"upstream\":\"http://127.0.0.1:$upstream_port\",\"auth\":\"public\"}" \
    -w ' %{http_code}')"
expect "a route is added through the admin API" ' 201$' "$route"
expect "a request proxies through to the upstream" '^hello from the upstream$' \
    "$(curl -fsS "http://127.0.0.1:$proxy_port/app/hello.txt")"
expect "an unrouted path is refused" '^404$' \
    "$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$proxy_port/elsewhere")"
expect "the access line is JSON on stdout" '"msg":"access".*"path":"/app/hello.txt"' "$(cat "$work/gateway.log")"

kill -TERM "$gateway"
status=0
wait "$gateway" || status=$?
[ "$status" -eq 0 ] || fail "the gateway exited with $status on SIGTERM"
pass "SIGTERM stops it cleanly"

printf '\n[packaging] all %d checks passed\n' "$checks"
