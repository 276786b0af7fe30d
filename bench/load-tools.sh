# Sourced by the bench scripts: installs wrk, nginx (the upstream) and
# taskset from Debian when missing, and stops a system nginx that would
# hold the bench ports. Never prompts.
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/install.sh"
need_commands wrk:wrk nginx:nginx taskset:util-linux
as_root systemctl stop nginx >/dev/null 2>&1 || true
