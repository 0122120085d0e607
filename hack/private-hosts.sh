#!/usr/bin/env bash
# Run a command with a private, writable /etc/hosts (a bind-mounted copy in a mount
# namespace of its own), and tell the node agent to keep cluster names in it
# (CTDEV_HOSTS_FILE; see devtools/ctdev/nodeagent/hostsfile.py). Everything the command
# starts — the node agent, the pods' processes, the tests' Redis clients — then
# resolves <pod>.<tier>-headless.<ns>.svc and <svc>.<ns>.svc at run time, as on a real
# cluster. The machine's own /etc/hosts is never touched.
#
# Needs root (or CAP_SYS_ADMIN) for unshare --mount; without it the command runs
# as it is, with a warning, and the tests that need run-time names fail saying so.
set -euo pipefail
if [[ ${CTDEV_HOSTS_FILE:-} ]]; then exec "$@"; fi  # already inside one
if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null \
  && unshare --mount --propagation private true 2>/dev/null; then
  exec unshare --mount --propagation private -- bash -c '
    set -euo pipefail
    copy="$(mktemp /tmp/ctdev-hosts.XXXXXX)"
    cp /etc/hosts "$copy"
    mount --bind "$copy" /etc/hosts
    export CTDEV_HOSTS_FILE=/etc/hosts
    "$@"; rc=$?
    rm -f "$copy"
    exit $rc' private-hosts "$@"
fi
echo "[private-hosts] no mount namespace here (not root?): running without run-time cluster names" >&2
exec "$@"
