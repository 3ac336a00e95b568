# syntax=docker/dockerfile:1
#
# Slipstream image: the model is exported to ONNX at build time; the runtime
# stage carries ONNX Runtime and the service only (no torch, no transformers).
#
#   docker build -t slipstream .                               # CUDA runtime, default reranker
#   docker build --build-arg RUNTIME=cpu -t slipstream:cpu .   # CPU runtime
#   docker build --build-arg MODEL=cross-encoder/ms-marco-MiniLM-L6-v2 -t slipstream:msmarco .
#   docker build --build-arg MODEL=models/my-classifier -t slipstream:mine .  # a path in the build context
#   docker build --build-arg EXTRAS=ray -t slipstream:gpu-ray .  # with Ray Serve (`slipstream ray`, deploy/ray/)
#   docker run --gpus all -p 3000:3000 slipstream              # then: curl localhost:3000/ready
#
# Every command that matters lives in scripts/ (export, serve, health check),
# which CI runs (tests/test_docker_scripts.py), so a broken step fails CI.

# gpu: onnxruntime-gpu on a CUDA 13 + cuDNN 9 runtime (PyPI's onnxruntime-gpu 1.31+
# is built for CUDA 13; see the gpu extra in pyproject.toml), plus the TensorRT 10
# libraries its TensorRT provider links (the tensorrt extra), so device "auto" runs
# on TensorRT; cpu: onnxruntime on Debian. EXTRAS adds extras (ray: `slipstream ray`).
ARG RUNTIME=gpu
ARG EXTRAS=
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------
# export: torch + transformers + optimum, used only to write the artifact.
FROM ${PYTHON_IMAGE} AS export
ARG RUNTIME
# A Hugging Face hub id, a directory in the build context, or "default".
ARG MODEL=default
# (DL3064 reads the TOKEN in TOKENIZERS_PARALLELISM as a secret; it is not one.)
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false
WORKDIR /src
# torch from its CPU wheel index: export needs no GPU, and PyPI's Linux torch
# wheel pulls the CUDA libraries (gigabytes) into a stage that never uses them.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# Dependencies before the rest of the context, so editing a script or a model
# does not reinstall them.
COPY pyproject.toml README.md ./
COPY slipstream ./slipstream
# (DL3013: "." is this project; its pins live in pyproject.toml.)
# hadolint ignore=DL3013
RUN pip install '.[cpu,export]'
COPY . .
RUN scripts/docker-export.sh "${MODEL}" /artifact "${RUNTIME}"

# ---------------------------------------------------------------------------
# The two runtime bases: a Python virtual environment on each.
FROM ${CUDA_IMAGE} AS base-gpu
# (DL3008: the distribution's current python3 is what we want, not a pinned build.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

FROM ${PYTHON_IMAGE} AS base-cpu
RUN python -m venv /opt/venv

# ---------------------------------------------------------------------------
# runtime: ONNX Runtime (GPU or CPU build) + the service; serves the artifact.
# (DL3006: base-gpu and base-cpu are stages above, not registry images.)
# hadolint ignore=DL3006
FROM base-${RUNTIME} AS runtime
ARG RUNTIME
ARG EXTRAS
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    SLIPSTREAM_PORT=3000 \
    SLIPSTREAM_TENSORRT__CACHE_DIR=/var/cache/slipstream/tensorrt
WORKDIR /opt/slipstream
COPY pyproject.toml README.md ./
COPY slipstream ./slipstream
COPY scripts/check_tensorrt_libs.py ./scripts/
# The GPU runtime: the TensorRT wheels put libnvinfer and libnvonnxparser in
# site-packages, where the dynamic loader does not look when onnxruntime loads its
# TensorRT provider; register that directory with it, then check (ldd) that every
# library both GPU providers need resolves, apart from the driver's libcuda (the
# NVIDIA runtime mounts it when a container starts): a missing one fails the build.
# hadolint ignore=DL3013
RUN pip install ".[${RUNTIME}${EXTRAS:+,${EXTRAS}}]" \
    && if [ "${RUNTIME}" = gpu ]; then \
         pip install ".[tensorrt]" \
         && python3 -c "import pathlib, tensorrt_libs; print(pathlib.Path(tensorrt_libs.__file__).parent)" \
            > /etc/ld.so.conf.d/tensorrt-libs.conf \
         && ldconfig \
         && python3 scripts/check_tensorrt_libs.py; \
       fi \
    && useradd --system --uid 10001 --create-home slipstream \
    && mkdir -p /var/cache/slipstream \
    && chown slipstream /var/cache/slipstream
COPY scripts/docker-serve.sh scripts/healthcheck.py ./scripts/
COPY --from=export /artifact ./artifact
USER 10001
EXPOSE 3000
# /ready answers 200 once every model has warmed up every bucket (TensorRT
# engine builds can take minutes on first start: hence the start period).
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "/opt/slipstream/scripts/healthcheck.py"]
ENTRYPOINT ["/opt/slipstream/scripts/docker-serve.sh", "/opt/slipstream/artifact"]
