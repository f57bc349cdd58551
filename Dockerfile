# impactreg with the IMPACT Docker guide's contract: mount your data at /Data and an output folder at /Out.
#   docker build -t impactreg .                                   (CPU)
#   docker build -t impactreg --build-arg VARIANT=cuda .          (CUDA torch wheels; run with --gpus all)
#   docker run --rm -v "$PWD/Data:/Data" -v "$PWD/Out:/Out" impactreg
FROM python:3.11-slim
ARG VARIANT=cpu
# For a small CPU-only image set TORCH_INDEX_URL to PyTorch's CPU wheel index; empty uses the default index.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 IMPACTREG_MODELS=/Data/Models
RUN if [ "$VARIANT" = "cpu" ] && [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    else \
        pip install torch==2.13.0; \
    fi
COPY pyproject.toml README.md /opt/impactreg/
COPY src /opt/impactreg/src
RUN pip install "/opt/impactreg[hub,eval]"
WORKDIR /Data
ENTRYPOINT ["python", "-m", "impactreg.docker_entry"]
CMD ["--data", "/Data", "--out", "/Out"]
