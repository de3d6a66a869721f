# mnist-search on the CPU (default). For a CUDA GPU, build with a CUDA base image instead, e.g.
#   docker build --build-arg BASE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime -t mnist-search:cuda .
# and run with `docker run --gpus all ...`; the trainer picks CUDA automatically (--device auto).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MNIST_SEARCH_DATA_DIR=/data \
    MNIST_SEARCH_STORAGE=sqlite:////work/mnist-search.db

WORKDIR /src
# The CPU wheel of torch keeps the image small; a CUDA base image already has torch.
RUN python -m pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2,<3" "torchvision>=0.17,<1"
COPY pyproject.toml README.md ./
COPY mnist_search ./mnist_search
RUN python -m pip install .

RUN useradd --create-home --uid 1000 searcher && mkdir -p /work /data && chown searcher /work /data
USER 1000
WORKDIR /work
VOLUME ["/work", "/data"]
EXPOSE 8080
ENTRYPOINT ["mnist-search"]
CMD ["--help"]
