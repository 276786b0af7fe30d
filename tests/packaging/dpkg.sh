#!/usr/bin/env bash
# Installs the .deb on this machine for real, and walks through a package's
# life: install, first start as the service would run, console login,
# a proxied request, an upgrade that keeps the data and an edited
# configuration, remove (data kept), purge (data and user gone).
#
#   bash tests/packaging/dpkg.sh DEB
#
# It changes the system (a package, a user, /etc/portcullis,
# /var/lib/portcullis), so it runs only as root, only where portcullis is
# not installed already, and tests/packaging/run.sh calls it only in CI
# (CI=true) or with PORTCULLIS_TEST_DPKG=1. Without systemd as PID 1 (a
# container), it starts the unit's ExecStartPre and ExecStart itself, as the
# portcullis user with the unit's capabilities, and checks what systemd
# would have done rather than doing it.
set -euo pipefail
deb="$(realpath "$1")"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$repo/.ci/install.sh"

[ "$(id -u)" -eq 0 ] || {
    echo "dpkg.sh must run as root" >&2
    exit 1
}
if dpkg -s portcullis >/dev/null 2>&1; then
    echo "portcullis is installed on this machine already: not touching it" >&2
    exit 1
fi
need_commands curl:curl python3:python3 setpriv:util-linux

work="$(mktemp -d)"
gateway=""
upstream=""
cleanup() {
    [ -z "$gateway" ] || kill "$gateway" 2>/dev/null || true
    [ -z "$upstream" ] || kill "$upstream" 2>/dev/null || true
    # Leave the machine as it was, whatever failed.
    dpkg -P portcullis >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

CHECKS_NAME=dpkg
source "$repo/tests/packaging/checks.sh"
on_failure() {
    [ -z "$gateway" ] || { echo "--- gateway log" >&2; cat "$work/gateway.log" >&2; }
}

proxy_port="$(free_port)"
admin_port="$(free_port)"
admin="http://127.0.0.1:$admin_port"
unit=""

# Starts the service the way its unit does: ExecStartPre, then ExecStart in
# the background, as User=/Group= with the ambient capability and no new
# privileges, in the unit's environment plus the two listen addresses (what
# a drop-in's Environment= would set, so the test takes free ports).
start_service() {
    local pre start
    pre="$(sed -n 's/^ExecStartPre=//p' "$unit")"
    start="$(sed -n 's/^ExecStart=//p' "$unit")"
    local as_service=(env -i PATH=/usr/bin:/bin
        PORTCULLIS_SERVER__LISTEN="127.0.0.1:$proxy_port"
        PORTCULLIS_ADMIN__LISTEN="127.0.0.1:$admin_port"
        setpriv --reuid=portcullis --regid=portcullis --init-groups --no-new-privs
        --inh-caps=+net_bind_service --ambient-caps=+net_bind_service)
    (cd / && "${as_service[@]}" $pre) >"$work/check.log" 2>&1 ||
        fail "ExecStartPre failed: $(cat "$work/check.log")"
    (cd / && exec "${as_service[@]}" $start) >>"$work/gateway.log" 2>&1 &
    gateway=$!
    for _ in $(seq 1 100); do
        if curl -fsS "$admin/readyz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$gateway" 2>/dev/null || fail "the service exited"
        sleep 0.1
    done
    fail "/readyz never answered"
}

stop_service() {
    kill -TERM "$gateway"
    local status=0
    wait "$gateway" || status=$?
    gateway=""
    [ "$status" -eq 0 ] || fail "SIGTERM: exit status $status"
}

# console METHOD PATH [JSON]: a call as the console's browser makes it.
console() {
    local extra=()
    [ ! -s "$work/csrf" ] || extra+=(-H "x-csrf-token: $(cat "$work/csrf")")
    [ "$#" -lt 3 ] || extra+=(-d "$3")
    curl -sS -X "$1" "$admin/admin/api$2" -b "$work/jar" -c "$work/jar" \
        -H "origin: $admin" -H 'content-type: application/json' "${extra[@]}" \
        -w ' %{http_code}'
}
remember_csrf() {
    sed 's/ [0-9]*$//' <<<"$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])' >"$work/csrf"
}

# ---- install -------------------------------------------------------------------

log "dpkg -i $(basename "$deb")"
installed="$(dpkg -i "$deb" 2>&1)" || fail "dpkg -i: $installed"
printf '%s\n' "$installed" | sed 's/^/    /'
expect "the install says where the first admin password will be" \
    '/var/lib/portcullis/initial-admin-password' "$installed"
expect "a portcullis system user exists" '^portcullis:x:[0-9]+:[0-9]+:.*:/var/lib/portcullis:/usr/sbin/nologin$' \
    "$(getent passwd portcullis)"
expect "the configuration is root:portcullis 0640" '^640 root portcullis$' \
    "$(stat -c '%a %U %G' /etc/portcullis/portcullis.toml)"
expect "the state directory is the service's, 0750" '^750 portcullis portcullis$' \
    "$(stat -c '%a %U %G' /var/lib/portcullis)"
expect "man portcullis works" 'portcullis' "$(man -w portcullis 2>&1)"
for candidate in /usr/lib/systemd/system/portcullis.service /lib/systemd/system/portcullis.service; do
    [ -f "$candidate" ] && unit="$candidate" && break
done
[ -n "$unit" ] || fail "no unit installed"
pass "the unit is installed at $unit"
if [ -d /run/systemd/system ]; then
    expect "systemd started the service" '^active$' "$(systemctl is-active portcullis)"
    systemctl stop portcullis
else
    log "systemd is not PID 1 here: starting the unit's commands as it would"
fi

# ---- first start -----------------------------------------------------------------

python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$repo/tests/packaging" >"$work/upstream.log" 2>&1 &
upstream=$!
upstream_port=""
for _ in $(seq 1 50); do
    upstream_port="$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/upstream.log" | head -n1)"
    [ -z "$upstream_port" ] || break
    sleep 0.1
done
[ -n "$upstream_port" ] || fail "the upstream did not start"

start_service
# Under systemd the first start was the service's own, logged to the journal.
first_start_log="$(cat "$work/gateway.log")"
[ ! -d /run/systemd/system ] || first_start_log="$(journalctl -u portcullis --no-pager 2>&1)"
expect "the log says where the admin password is" \
    '"password_file":"/var/lib/portcullis/initial-admin-password"' "$first_start_log"
expect "the password file is the service's, 0600" '^600 portcullis$' \
    "$(stat -c '%a %U' /var/lib/portcullis/initial-admin-password)"
password="$(cat /var/lib/portcullis/initial-admin-password)"

answer="$(console POST /auth/login "{\"username\":\"admin\",\"password\":\"$password\"}")"
expect "the console logs in with the initial password" ' 200$' "$answer"
expect "and asks for a new one" '"must_change_password":true' "$answer"
remember_csrf "$answer"
new_password="a new password for the packaging test"
answer="$(console POST /auth/password "{\"current_password\":\"$password\",\"new_password\":\"$new_password\"}")"
expect "the password is changed" ' 200$' "$answer"
remember_csrf "$answer"
[ ! -e /var/lib/portcullis/initial-admin-password ] || fail "the initial password file is still there"
pass "the initial password file is gone"

answer="$(console POST /routes "{\"id\":\"packaged\",\"path\":\"/packaged/*\",\"upstream\":\"http://127.0.0.1:$upstream_port\",\"auth\":\"public\",\"strip_prefix\":true}")"
expect "a route is made in the console" ' 201$' "$answer"
expect "a request proxies through" '^#!/usr/bin/env bash' \
    "$(curl -fsS "http://127.0.0.1:$proxy_port/packaged/dpkg.sh" | head -n1)"
stop_service

# ---- upgrade -----------------------------------------------------------------------

log "upgrade to revision 2, with a locally edited configuration"
sed -i 's/^limit = 600$/limit = 700/' /etc/portcullis/portcullis.toml
upgrade="$work/upgrade"
mkdir -p "$upgrade"
(cd "$repo" && cargo deb --no-build --quiet --deb-revision 2 --output "$upgrade/") >/dev/null
upgraded="$(dpkg -i "$upgrade"/portcullis_*-2_amd64.deb 2>&1)" || fail "dpkg -i (upgrade): $upgraded"
expect "the upgrade is installed" '^ii +portcullis +[0-9.]+-2 ' "$(dpkg -l portcullis | tail -n1)"
expect "the edited configuration is kept" '^limit = 700$' "$(cat /etc/portcullis/portcullis.toml)"
if grep -q 'initial-admin-password' <<<"$upgraded"; then fail "the upgrade printed the first-install message"; fi
pass "the upgrade does not repeat the first-install message"
if [ -d /run/systemd/system ]; then
    expect "systemd restarted the service after the upgrade" '^active$' "$(systemctl is-active portcullis)"
    systemctl stop portcullis
fi
start_service
answer="$(console POST /auth/login "{\"username\":\"admin\",\"password\":\"$new_password\"}")"
expect "after the upgrade the changed password logs in" ' 200$' "$answer"
[ ! -e /var/lib/portcullis/initial-admin-password ] || fail "the upgrade made a new first admin"
expect "after the upgrade the console-made route still proxies" '^#!/usr/bin/env bash' \
    "$(curl -fsS "http://127.0.0.1:$proxy_port/packaged/dpkg.sh" | head -n1)"
stop_service

# ---- remove, purge -------------------------------------------------------------------

dpkg -r portcullis >/dev/null 2>&1 || fail "dpkg -r"
[ ! -e /usr/bin/portcullis ] || fail "remove left the binary"
[ -d /var/lib/portcullis ] && [ -n "$(ls -A /var/lib/portcullis)" ] || fail "remove deleted the data"
getent passwd portcullis >/dev/null || fail "remove deleted the user"
[ -f /etc/portcullis/portcullis.toml ] || fail "remove deleted the configuration"
pass "remove keeps the data, the configuration and the user"
dpkg -P portcullis >/dev/null 2>&1 || fail "dpkg -P"
[ ! -e /var/lib/portcullis ] || fail "purge left /var/lib/portcullis"
[ ! -e /etc/portcullis ] || fail "purge left /etc/portcullis"
! getent passwd portcullis >/dev/null || fail "purge left the user"
! getent group portcullis >/dev/null || fail "purge left the group"
pass "purge deletes the data, the configuration, the user and the group"

printf '\n[dpkg] all %d checks passed\n' "$checks"
