# The embedded Kubernetes-compatible control plane (`cloudcore controlplane`): for hosts without a cluster.
#
#   docker build -f docker/controlplane.Dockerfile -t kubeedge-py/controlplane:0.1.0 .
#   docker run -d --name kubeedge-controlplane -v kubeedge-cp:/var/lib/kubeedge/controlplane -p 6443:6443 \
#       kubeedge-py/controlplane:0.1.0 --tls-san <host IP or name>
#
# State (SQLite state.db), PKI and admin.kubeconfig live in the volume at /var/lib/kubeedge/controlplane.
# Arguments after the image name are added to the defaults below (--tls-san for the name clients use).
# docs/install.md ("Containers"), docs/controlplane.md.

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

# -- runtime: the venv, the health check, an unprivileged user owning the data directory -------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="kubeedge-py control plane" \
      org.opencontainers.image.description="Kubernetes-compatible API server on SQLite, with controllers" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10000 kubeedge \
 && useradd --system --uid 10000 --gid kubeedge --home-dir /var/lib/kubeedge --no-create-home \
        --shell /usr/sbin/nologin kubeedge \
 && install -d -o kubeedge -g kubeedge -m 0750 /var/lib/kubeedge /var/lib/kubeedge/controlplane /run/kubeedge

COPY --from=builder /opt/kubeedge/venv /opt/kubeedge/venv
COPY docker/healthcheck.py /opt/kubeedge/healthcheck.py

ENV PATH=/opt/kubeedge/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10000:10000
WORKDIR /var/lib/kubeedge
VOLUME ["/var/lib/kubeedge/controlplane"]

# The Kubernetes API (HTTPS).
EXPOSE 6443/tcp

# /readyz over HTTPS on 127.0.0.1, verified with the control plane's own CA (data dir and port are read
# from this container's command line).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/kubeedge/healthcheck.py", "controlplane"]

ENTRYPOINT ["cloudcore", "controlplane", "--data-dir", "/var/lib/kubeedge/controlplane", "--bind-address", "0.0.0.0", "--bind-port", "6443"]
CMD []
