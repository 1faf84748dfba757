# cloudcore: the cloud side of kubeedge-py (CloudHub, EdgeController, DeviceController, ...).
#
#   docker build -f docker/cloudcore.Dockerfile -t kubeedge-py/cloudcore:0.1.0 .
#   docker run -v /etc/kubeedge/config:/etc/kubeedge/config:ro -p 10000:10000 -p 10002:10002 \
#       kubeedge-py/cloudcore:0.1.0
#
# The config is mounted at /etc/kubeedge/config/cloudcore.yaml, where upstream's cloudcore image reads it.
# It must name a Kubernetes API (kubeAPIConfig.kubeConfig, mounted too). The CA, server certificate and join
# token live in Secrets of the `kubeedge` namespace, so the container writes no files and needs no root.
# docs/install.md ("Containers") and config/kubernetes/cloudcore.yaml (a real cluster).

# -- builder: a wheel of this project, installed with its dependencies into a venv without pip ---------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY cloudcore ./cloudcore
COPY edgecore ./edgecore
COPY keadm ./keadm

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/kubeedge/venv \
 && python -m pip --python /opt/kubeedge/venv/bin/python install --no-compile /wheels/kubeedge_py-*.whl \
 && /opt/kubeedge/venv/bin/python -m compileall -q /opt/kubeedge/venv/lib

# -- runtime: the venv, the health check, an unprivileged user ---------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="kubeedge-py cloudcore" \
      org.opencontainers.image.description="KubeEdge CloudCore in Python asyncio" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10000 kubeedge \
 && useradd --system --uid 10000 --gid kubeedge --home-dir /var/lib/kubeedge --no-create-home \
        --shell /usr/sbin/nologin kubeedge \
 && install -d -m 0755 /etc/kubeedge /etc/kubeedge/config \
 && install -d -o kubeedge -g kubeedge -m 0750 /var/lib/kubeedge /run/kubeedge

COPY --from=builder /opt/kubeedge/venv /opt/kubeedge/venv
COPY docker/healthcheck.py /opt/kubeedge/healthcheck.py

ENV PATH=/opt/kubeedge/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10000:10000
WORKDIR /var/lib/kubeedge

# CloudHub websocket, QUIC (UDP, off by default), certificates (join), CloudStream stream server and tunnel
# (off by default), monitor server (/metrics, /healthz, /readyz; bind it to 0.0.0.0:9091 to reach it from
# outside the container: commonConfig.monitorServer.bindAddress).
EXPOSE 10000/tcp 10001/udp 10002/tcp 10003/tcp 10004/tcp 9091/tcp

# Liveness of the monitor server at the address cloudcore.yaml gives (127.0.0.1:9091 by default, which the
# check reaches from inside the container).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/kubeedge/healthcheck.py", "cloudcore"]

ENTRYPOINT ["cloudcore"]
CMD ["--config", "/etc/kubeedge/config/cloudcore.yaml"]
