# syntax=docker/dockerfile:1
# routerd's container image. Build from the repository root:
#   docker build -t routerd:0.1.0 .
# The shipped config/routes.yaml and schemas/ are baked in as a default; Kubernetes mounts
# its ConfigMaps over /etc/routerd/config and /etc/routerd/schemas.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY routerd ./routerd
# The venv lives at the same path in both stages: its scripts' shebangs point into it.
# With the `api` extra: one image runs `routerd serve` (the entrypoint) and the reference
# public API (`--entrypoint routerd` ... `api`); the extra adds about 2 MB.
RUN python -m venv /opt/routerd/.venv \
 && /opt/routerd/.venv/bin/pip install '.[api]' \
 && /opt/routerd/.venv/bin/python -m compileall -q /opt/routerd/.venv

FROM python:3.11-slim
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
RUN groupadd --system --gid 10001 routerd \
 && useradd --system --uid 10001 --gid routerd --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin routerd
COPY --from=build /opt/routerd/.venv /opt/routerd/.venv
# Where `routerd rejections record` keeps its SQLite file by default in a container: a
# volume mounted here takes this owner, so the non-root user can write it.
RUN install -d -o 10001 -g 10001 /var/lib/routerd
COPY config/routes.yaml /etc/routerd/config/routes.yaml
COPY schemas/ /etc/routerd/schemas/
WORKDIR /etc/routerd
# The HTTP endpoint must listen beyond the container's loopback for probes and scrapes.
# No .pyc writes: the root filesystem is read-only in Kubernetes (compiled above instead).
ENV ROUTERD_CONFIG=/etc/routerd/config/routes.yaml \
    ROUTERD_HTTP_ADDR=0.0.0.0:9464 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/routerd/.venv/bin:$PATH
USER 10001:10001
EXPOSE 9464
# routerd runs as PID 1 without an init: it handles SIGTERM/SIGINT/SIGHUP itself and
# starts no child processes, so there are no zombies to reap.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/routerd/.venv/bin/routerd", "serve"]
