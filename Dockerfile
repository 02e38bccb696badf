# adamscape's one image: the CLI, a Ray head or worker node, the scheduler (`adamscape serve`) and the
# dashboard (docker-compose.yml starts each from it). `docker build -t adamscape .`
#
# torch: the lock pins torch 2.14.1 from PyPI, whose Linux x86_64/aarch64 wheel is CUDA-enabled: it pulls
# CUDA 13 (cuda-toolkit, nvidia-cudnn-cu13, nccl …) in as wheels, so the image needs no CUDA base image,
# only an NVIDIA driver on the host that runs CUDA 13 (580 or newer) and the NVIDIA Container Toolkit.
# The same wheel runs on CPU-only machines.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the locked dependencies, installed with uv as `make install` does ---------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# dependencies first: this layer (torch and CUDA, gigabytes) is rebuilt only when the lock changes
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY optimizers optimizers
COPY study study
COPY workers workers
COPY dashboard dashboard
RUN uv sync --frozen --no-dev

# --- runtime: the venv and the code, no uv, no build tools; a non-root user ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 1000 adamscape \
    && useradd --uid 1000 --gid adamscape --create-home --shell /usr/sbin/nologin adamscape
WORKDIR /app
# root-owned, so the services cannot change the code they run; the venv sits at the builder's path
# (the project is installed editable from /app, its scripts name /app/.venv/bin/python)
COPY --from=builder /app/.venv /app/.venv
COPY pyproject.toml uv.lock README.md ./
COPY optimizers optimizers
COPY study study
COPY workers workers
COPY dashboard dashboard
COPY examples examples
# data_dir = "data" in a study file; docker-compose.yml mounts ./data here on every node
RUN mkdir -p /app/data && chown adamscape:adamscape /app/data
ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
USER adamscape
CMD ["adamscape", "--help"]
