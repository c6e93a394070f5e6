#!/usr/bin/env bash
# Build (or reuse) the local, offline test base image for the container tests: Debian bookworm + python3 +
# the project's pinned dependencies (constraints.txt) + torch/torchvision + hatchling/pip, so that the
# project's Dockerfile builds against it with no network (docker build --build-arg BASE_IMAGE=...).
#
# No image registry is reachable here, so the base is made locally:
#   debootstrap --variant=minbase bookworm ROOTFS (+ python3)          -> a minimal Debian rootfs
#   pip install --target ROOTFS/usr/local/lib/python3.11/dist-packages  -> dependencies, installed host-side
#                                                                         from the local wheel store / PyPI
#   tar -C ROOTFS -c . | docker import - fmuia-test-base:KEY            -> the image
# KEY hashes the recipe version, the torch pins, constraints.txt and pyproject's dependency list: when none
# changed, the existing image is reused (seconds).
# The image is also tagged fmuia-test-base:latest, which the tests use (override: FMUIA_TEST_BASE_IMAGE).
#
# Environment: FMUIA_CI_WORK (scratch folder, default /var/tmp/fmuia-ci), FMUIA_TORCH_PINS (default the
# torch/torchvision pair that lies on this machine's disk).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
log() { echo "[docker-base-image +$(( $(date +%s) - t0 ))s] $*"; }

REPO=fmuia-test-base
TORCH_PINS=${FMUIA_TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}
PYVER=3.11   # Debian bookworm's python3
WORK=${FMUIA_CI_WORK:-/var/tmp/fmuia-ci}
# Bump RECIPE when a change to this script changes the image's contents (comments and logging don't).
RECIPE=1
KEY=$( { echo "recipe $RECIPE $TORCH_PINS"; cat constraints.txt; sed -n '/^dependencies = \[/,/^\]/p' pyproject.toml; } \
    | sha256sum | cut -c1-12)
IMAGE="$REPO:$KEY"

mkdir -p "$WORK"
exec 9>"$WORK/lock"
flock 9   # one build at a time (CI and a developer's pytest may both ask)

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    docker tag "$IMAGE" "$REPO:latest"
    log "reusing $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}'))"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

ROOTFS="$WORK/rootfs-$KEY"
rm -rf "$ROOTFS" "$WORK"/rootfs-*   # leftovers of an interrupted or older build
log "debootstrap --variant=minbase bookworm (+python3) -> $ROOTFS"
debootstrap --variant=minbase --include=python3,python-is-python3 bookworm "$ROOTFS" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log"; exit 1; }
log "debootstrap done"

SITE="$ROOTFS/usr/local/lib/python$PYVER/dist-packages"
mkdir -p "$SITE"
# The project's run-time dependencies, read from pyproject.toml (the single list), pinned by constraints.txt.
mapfile -t DEPS < <(python3 - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as fh:
    print("\n".join(tomllib.load(fh)["project"]["dependencies"]))
PY
)
log "pip install --target (${#DEPS[@]} dependencies + $TORCH_PINS + hatchling + pip)"
# shellcheck disable=SC2086
python3 -m pip install --disable-pip-version-check --no-warn-script-location \
    --target "$SITE" -c constraints.txt \
    $TORCH_PINS "${DEPS[@]}" hatchling pip >"$WORK/pip.log" 2>&1 \
    || { grep -v "is ignored: it is neither" "$WORK/pip.log" | tail -n 40; exit 1; }
# Console scripts land in SITE/bin with the host's interpreter path in their shebang: not wanted.
rm -rf "$SITE/bin"
# Debian marks its python as externally managed (PEP 668); the image is ours, let pip install the project.
rm -f "$ROOTFS/usr/lib/python$PYVER/EXTERNALLY-MANAGED"
rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
log "rootfs ready: $(du -sh "$ROOTFS" | cut -f1)"

log "docker import -> $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "fmuia offline test base ($KEY)" - "$IMAGE" >/dev/null
docker tag "$IMAGE" "$REPO:latest"
rm -rf "$ROOTFS"
# Older fmuia-test-base images are no longer referenced by anything: drop them to keep the disk free.
docker image ls "$REPO" --format '{{.Repository}}:{{.Tag}}' | grep -vE ":(latest|$KEY)$" | xargs -r docker rmi >/dev/null 2>&1 || true
log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}'))"
