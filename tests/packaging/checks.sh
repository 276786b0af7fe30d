# Sourced by the packaging tests: counted checks that stop at the first
# failure. Set CHECKS_NAME (the log prefix) first; a script that has more to
# show when a check fails defines on_failure after sourcing this.
checks=0
log() { printf '[%s] %s\n' "$CHECKS_NAME" "$*" >&2; }
pass() { checks=$((checks + 1)); printf '  ok  %s\n' "$*"; }
on_failure() { :; }
fail() {
    printf '  FAILED  %s\n' "$*" >&2
    on_failure
    exit 1
}
# expect DESCRIPTION PATTERN TEXT: TEXT matches the extended regex PATTERN.
expect() {
    if grep -Eq -- "$2" <<<"$3"; then pass "$1"; else fail "$1: no /$2/ in:"$'\n'"$3"; fi
}
refute() {
    if grep -Eq -- "$2" <<<"$3"; then fail "$1: /$2/ found in:"$'\n'"$3"; else pass "$1"; fi
}
# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
