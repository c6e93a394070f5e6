#!/usr/bin/env bash
# Start a real Docker engine for the container tests, then build (or reuse) the local test base images.
#
# Called by .ci/run when present; idempotent: a second run finds the engine running and the base
# images built, and returns in seconds (measured: 0.4 s with the engine up, 4 s restarting it). Needs root (CI runs as root). What it does:
#   1. installs Debian's docker.io when dockerd is missing (apt-get update first);
#   2. starts dockerd in the background, without iptables/NAT/bridge (this machine has no image
#      registry and no network for containers: everything runs with --network none);
#   3. runs .ci/docker-base-image.sh, which makes the offline test base images (debootstrap + host-side
#      pip install of the project's pinned dependencies + docker import) unless they already exist
#      (measured cold: ~20 s for docker.io, ~5.5 min for the images on a quiet machine, ~11 min on a busy one).
# Timings of each step are printed, so the CI log shows where the docker part spends its time.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
log() { echo "[docker-engine +$(( $(date +%s) - t0 ))s] $*"; }

if [ "$(id -u)" != 0 ]; then
    log "not root: cannot install or start dockerd; the docker tests will skip"; exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    log "docker.io installed: $(dockerd --version)"
fi

sock=/var/run/docker.sock
engine_up() { docker -H "unix://$sock" info >/dev/null 2>&1; }

if engine_up; then
    log "engine already running"
else
    mkdir -p /var/log
    log "starting dockerd (--iptables=false --ip-masq=false --bridge=none)"
    # setsid: the engine outlives this script (the tests run after it); its log stays for debugging.
    setsid nohup dockerd --iptables=false --ip-masq=false --bridge=none \
        >/var/log/fmuia-dockerd.log 2>&1 < /dev/null &
    echo $! > /var/run/fmuia-dockerd.pid
    for _ in $(seq 1 120); do
        engine_up && break
        sleep 0.5
    done
    if ! engine_up; then
        log "dockerd did not come up; last lines of /var/log/fmuia-dockerd.log:"
        tail -n 30 /var/log/fmuia-dockerd.log || true
        exit 1
    fi
    log "engine up: server $(docker -H "unix://$sock" version --format '{{.Server.Version}}')"
fi

bash .ci/docker-base-image.sh
# Dangling images (earlier builds of re-used test tags) only take disk space.
docker image prune -f >/dev/null 2>&1 || true
log "done"
