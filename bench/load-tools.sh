# Sourced by the bench scripts: installs wrk, nginx (the upstream) and
# taskset from Debian when missing, and stops a system nginx that would
# hold the bench ports. Never prompts.
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
