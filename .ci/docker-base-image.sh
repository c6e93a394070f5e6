#!/usr/bin/env bash
# Build (or reuse) the local, offline base images of the container tests. No image registry is reachable
# here, so they are made from scratch:
#
#   fmuia-test-python:KEY  Debian bookworm (debootstrap --variant=minbase) + python3: ~0.2 GB. The tiny
#                          hand-made test images (sleeper, hog, probe, template, ...) build FROM it.
#   fmuia-test-base:KEY    the same + the project's pinned dependencies (constraints.txt), torch/torchvision,
#                          hatchling and pip, installed host-side with
#                          `pip install --target ROOTFS/usr/local/lib/python3.11/dist-packages`: ~6.6 GB.
#                          The project's Dockerfile builds FROM it offline
#                          (--build-arg BASE_IMAGE=fmuia-test-base:latest --build-arg PIP_ARGS=--no-index).
#
# Each is imported with `tar -C ROOTFS -c . | docker import -` and also tagged :latest (what the tests use;
# override with FMUIA_TEST_PYTHON_IMAGE / FMUIA_TEST_BASE_IMAGE). KEY hashes the recipe version, the torch
# pins, constraints.txt and pyproject's dependency list: when none changed, the existing images are reused
# and the script returns in about a second.
#
# Environment: FMUIA_CI_WORK (scratch folder, default /var/tmp/fmuia-ci), FMUIA_TORCH_PINS (default: the
# torch/torchvision pair that lies on this machine's disk). Never edit this file while it runs (bash reads
# scripts as it goes).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
log() { echo "[docker-base-image +$(( $(date +%s) - t0 ))s] $*"; }
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1/1e9}'; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

TORCH_PINS=${FMUIA_TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
PYVER=3.11   # Debian bookworm's python3
WORK=${FMUIA_CI_WORK:-/var/tmp/fmuia-ci}
# Bump RECIPE when a change to this script changes the images' contents (comments and logging don't).
RECIPE=1
KEY=$( { echo "recipe $RECIPE $TORCH_PINS"; cat constraints.txt; sed -n '/^dependencies = \[/,/^\]/p' pyproject.toml; } \
    | sha256sum | cut -c1-12)
SLIM="fmuia-test-python:$KEY"
FAT="fmuia-test-base:$KEY"

mkdir -p "$WORK"
exec 9>"$WORK/lock"
flock 9   # one build at a time (CI and a developer's pytest may both ask)

if have "$SLIM" && have "$FAT"; then
    docker tag "$SLIM" fmuia-test-python:latest
    docker tag "$FAT" fmuia-test-base:latest
    log "reusing $SLIM ($(size "$SLIM")) and $FAT ($(size "$FAT"))"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

ROOTFS="$WORK/rootfs-$KEY"
rm -rf "$WORK"/rootfs-*   # leftovers of an interrupted or older build
log "debootstrap --variant=minbase bookworm (+python3) -> $ROOTFS"
debootstrap --variant=minbase --include=python3,python-is-python3 bookworm "$ROOTFS" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log"; exit 1; }
# Debian marks its python as externally managed (PEP 668); these images are ours: let pip install into them.
rm -f "$ROOTFS/usr/lib/python$PYVER/EXTERNALLY-MANAGED"
rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
log "debootstrap done ($(du -sh "$ROOTFS" | cut -f1))"

import_rootfs() {  # import_rootfs IMAGE MESSAGE
    tar --numeric-owner -C "$ROOTFS" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "$2" - "$1" >/dev/null
}

if ! have "$SLIM"; then
    import_rootfs "$SLIM" "fmuia test python ($KEY)"
    log "imported $SLIM ($(size "$SLIM"))"
fi

if ! have "$FAT"; then
    SITE="$ROOTFS/usr/local/lib/python$PYVER/dist-packages"
    mkdir -p "$SITE"
    # The project's run-time dependencies, read from pyproject.toml (the single list), pinned by constraints.txt.
    mapfile -t DEPS < <(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
    log "pip install --target (${#DEPS[@]} dependencies + $TORCH_PINS + hatchling + pip); log: $WORK/pip.log"
    # shellcheck disable=SC2086
    python3 -m pip install --disable-pip-version-check --no-warn-script-location \
        --target "$SITE" -c constraints.txt \
        $TORCH_PINS "${DEPS[@]}" hatchling pip >"$WORK/pip.log" 2>&1 \
        || { grep -v "is ignored: it is neither" "$WORK/pip.log" | tail -n 40; exit 1; }
    # Console scripts land in SITE/bin with the host's interpreter in their shebang: not wanted.
    rm -rf "$SITE/bin"
    log "rootfs ready ($(du -sh "$ROOTFS" | cut -f1)); docker import -> $FAT"
    import_rootfs "$FAT" "fmuia offline test base ($KEY)"
    log "imported $FAT ($(size "$FAT"))"
fi
rm -rf "$ROOTFS"
docker tag "$SLIM" fmuia-test-python:latest
docker tag "$FAT" fmuia-test-base:latest
# Older images of these repositories are no longer referenced by anything: drop them to keep the disk free.
for repo in fmuia-test-python fmuia-test-base; do
    docker image ls "$repo" --format '{{.Repository}}:{{.Tag}}' | grep -vE ":(latest|$KEY)$" | xargs -r docker rmi >/dev/null 2>&1 || true
done
log "done"
