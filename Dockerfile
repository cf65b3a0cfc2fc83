# syntax=docker/dockerfile:1.7
# Wav2Vec2 inference service on a CUDA PyTorch base. One container runs one server process
# (one uvicorn, one event loop, one batcher per model) on at most one GPU: scale out with more
# containers (Kubernetes replicas with `nvidia.com/gpu: 1` each), not with workers per container.
#
#   docker build -t w2v-service .
#   docker run --gpus 1 -p 8000:8000 w2v-service                       # embedded demo model
#   docker run --gpus 1 -p 8000:8000 -v /srv/models:/models:ro \
#     -e W2V_MODEL=asr=/models/wav2vec2-base-960h w2v-service          # model on a volume
#   docker build --build-arg MODEL_ID=facebook/wav2vec2-base-960h --build-arg MODEL_NAME=asr \
#     [--secret id=hf_token,src=$HOME/.cache/huggingface/token] -t w2v-service:asr .  # baked in
#
# Every setting is an environment variable (W2V_PORT, W2V_DEVICE, W2V_MAX_BATCH_SIZE, ...; see
# service/settings.py) and every CLI flag works after the image name: `... w2v-service serve
# --port 9000`, `... w2v-service predict /data/a.wav`.

# The runtime tag's CUDA build of torch is the torch the server runs; pip never replaces it.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

# ---- deps: wheels of the runtime dependencies, from pyproject.toml alone, so this layer and
# the install layer below stay cached until the dependencies change. Binary wheels only: the
# builder needs no compiler, and a dependency without a wheel fails here, not at run time.
FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml deploy/docker/requirements.py ./
RUN python requirements.py pyproject.toml > requirements.txt \
    && pip wheel --no-cache-dir --only-binary=:all: --wheel-dir /wheels -r requirements.txt \
    && cp requirements.txt /wheels/

# ---- build: the service as a (non-editable) wheel, package data (static page, demo model)
# included.
FROM deps AS build
COPY README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- model: optionally bake a hub checkpoint into /models/$MODEL_NAME (empty by default).
# A token for gated models comes as a build secret, never as an argument or a layer.
FROM deps AS model
ARG MODEL_ID=""
ARG MODEL_REVISION=main
ARG MODEL_NAME=model
RUN pip install --no-cache-dir --no-index --find-links /wheels -r /wheels/requirements.txt
COPY deploy/docker/fetch_model.py /usr/local/bin/fetch_model.py
RUN --mount=type=secret,id=hf_token,required=false \
    mkdir -p /models \
    && if [ -n "$MODEL_ID" ]; then \
        HF_TOKEN_PATH=/run/secrets/hf_token python /usr/local/bin/fetch_model.py \
            "$MODEL_ID" "/models/$MODEL_NAME" --revision "$MODEL_REVISION"; \
    fi

# ---- runtime: the base image (no compilers), the wheels, a non-root user.
FROM ${BASE_IMAGE} AS runtime
ARG MODEL_ID=""
ARG MODEL_NAME=model

LABEL org.opencontainers.image.title="w2v-service" \
      org.opencontainers.image.description="Batch-invariant inference service for the Wav2Vec2 family" \
      org.opencontainers.image.licenses="Apache-2.0"

# Caches go to /tmp so the root filesystem can be read-only (Kubernetes mounts an emptyDir there).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton \
    CUDA_CACHE_PATH=/tmp/.nv/ComputeCache

RUN groupadd --system --gid 10001 w2v \
    && useradd --system --no-log-init --uid 10001 --gid w2v --create-home --home-dir /home/w2v w2v

# Dependencies first (their own cached layer), then the package without dependencies: torch is
# not in the wheelhouse and --no-index forbids fetching one, so the base image's torch stays.
RUN --mount=type=bind,from=deps,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels -r /wheels/requirements.txt
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-cache-dir --no-index --no-deps /dist/w2v_service-*.whl \
    && python -c "import service, torch; print('w2v-service', service.__version__, 'torch', torch.__version__)"

COPY deploy/docker/healthcheck.py deploy/docker/fetch_model.py /opt/w2v/
# /models is the mount point for a model volume; it holds the baked-in model when MODEL_ID is set.
COPY --from=model /models /models

# Listen on all interfaces inside the container; every W2V_* setting can be overridden at run time.
# W2V_MODEL defaults to the baked-in model when there is one, else empty (the embedded demo model).
ENV W2V_HOST=0.0.0.0 \
    W2V_PORT=8000 \
    W2V_MODEL=${MODEL_ID:+${MODEL_NAME}=/models/${MODEL_NAME}}

USER 10001:10001
WORKDIR /home/w2v
# Documentation only: the server listens on $W2V_PORT.
EXPOSE 8000

# Model loading and warm-up can take minutes on a cold volume: failures before then do not count.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/opt/w2v/healthcheck.py"]

# Exec form: the server is PID 1 and receives SIGTERM itself, so it stops being ready, drains
# (W2V_DRAIN_TIMEOUT) and exits. `docker run --init` adds a zombie reaper if wanted.
ENTRYPOINT ["python", "-m", "service"]
CMD ["serve"]
