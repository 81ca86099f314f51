# One image for every aigw role (api, worker, audit writer); compose picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 AIGW_HOME=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY workers ./workers
COPY config ./config
COPY skills ./skills
# bubblewrap: the skill scripts' sandbox (docs/operations.md, "What a skill can and cannot reach")
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir . && useradd --system --home /data aigw && mkdir -p /data && chown aigw /data
USER aigw
ENV AIGW_CONFIG=/app/config
EXPOSE 18789
CMD ["aigw", "api", "--host", "0.0.0.0"]
