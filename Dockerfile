# The FM_UIA baseline as a challenge submission: reads the test folder at /input, writes the official
# prediction files to /output.
#
#   docker build -t fmuia-baseline --build-arg CHECKPOINT=runs/r1/best.pt .
#   docker run --gpus all --rm --network none --read-only --tmpfs /tmp \
#       -v "$PWD/data/test":/input:ro -v "$PWD/out":/output fmuia-baseline
#
# (`fmuia submission build --checkpoint runs/r1/best.pt` does the same from anywhere, with a minimal,
# deterministic build context.)
#
# Reproducibility. The base is pinned by tag below; to pin it by content, replace the tag with its digest:
#   docker pull pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
#   docker inspect --format '{{index .RepoDigests 0}}' pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
#   docker build --build-arg BASE_IMAGE=pytorch/pytorch@sha256:<digest> ...
# torch/torchvision come from the base; every other dependency is pinned by constraints.txt; no byte code
# is compiled for the project and the context is copied as is, so the same inputs give the same image
# contents except timestamps.
#
# Offline builds. When BASE_IMAGE already holds the dependencies (and hatchling, the build backend), pass
# --build-arg PIP_ARGS=--no-index: pip then only installs the project and checks that every dependency is
# present, without touching the network. That is how CI builds it (.ci/docker-base-image.sh makes such a base).
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# Path of the trained checkpoint inside the build context (e.g. runs/r1/best.pt).
ARG CHECKPOINT=checkpoints/baseline.pt
# Extra pip options for the project install (--no-index for offline builds).
ARG PIP_ARGS=

# Nothing may be written outside /output and /tmp (the container runs with a read-only root filesystem
# and an arbitrary UID), so every cache and home directory points into /tmp.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    USER=fmuia \
    LOGNAME=fmuia \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    TORCH_HOME=/tmp/.cache/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    CUDA_CACHE_PATH=/tmp/.cache/nv \
    HF_HOME=/tmp/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    FMUIA_CHECKPOINT=/opt/fmuia/model.pt

COPY pyproject.toml README.md constraints.txt /opt/fmuia/src/
COPY fmuia /opt/fmuia/src/fmuia
COPY evaluation /opt/fmuia/src/evaluation
COPY submission /opt/fmuia/src/submission
COPY ${CHECKPOINT} /opt/fmuia/model.pt

# The project (pinned dependencies), a non-root user (a fixed passwd line: no dated shadow entry), and
# read permission for any UID on the checkpoint. The source tree is not kept.
RUN set -eux; \
    cd /opt/fmuia/src; \
    python -c "import hatchling" 2>/dev/null || python -m pip install -c constraints.txt ${PIP_ARGS} hatchling; \
    python -m pip install --no-build-isolation --no-compile -c constraints.txt ${PIP_ARGS} .; \
    cd /; rm -rf /opt/fmuia/src; \
    find /opt/fmuia ! -perm -a+r -exec chmod a+r {} +; \
    echo 'fmuia:x:10001:10001:fmuia:/tmp:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'fmuia:x:10001:' >> /etc/group; \
    mkdir -p /input /output; chmod 0777 /output; \
    fmuia --version

USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["fmuia", "predict", "--data", "/input", "--out", "/output", "--checkpoint", "/opt/fmuia/model.pt"]
# `fmuia predict` options (replace with e.g. `--batch-size 32 --tta`); the GPU is used when present.
# Decoder worker processes hand batches back as numpy arrays through a pipe, not through /dev/shm, which a
# plain `docker run` (the platform's contract) limits to 64 MB: tensors there made the run hang.
CMD ["--device", "auto", "--workers", "2"]
