# One image for every role; the command picks the role (sqd server | worker | agent).
# CPU/CUDA: torch 2.14.1 from PyPI is a CUDA 13 build that also runs on the CPU. For another CUDA build, install
# torch first from its index (see README, "Other CUDA builds") by overriding TORCH_INDEX_URL.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 SQD_HOME=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sqd sqd
COPY server server
COPY worker worker
COPY trainer trainer
COPY web web
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
        --index-url "$TORCH_INDEX_URL"; fi \
 && pip install --no-cache-dir ".[all]" \
 && pip install --no-cache-dir --no-deps facenet-pytorch==2.6.0
VOLUME ["/data"]
EXPOSE 8765
ENTRYPOINT ["sqd"]
CMD ["server", "--host", "0.0.0.0"]
