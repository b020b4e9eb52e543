# Daily Sales ETL image: the flow-run image for the Docker and Kubernetes work pools and the
# image of the Kubernetes worker (k8s/worker.yaml). Build: docker build -t daily-sales-etl:0.1.0 .
# The base image is pinned by digest (a tag can be pushed again, a digest cannot). Where no
# registry is reachable, pass a local base instead: --build-arg PYTHON_IMAGE=... (CI does, see
# .ci/provision-docker). docs/kubernetes-security.md says how to move the pin.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Every dependency (the runtime ones, [deploy]'s workers and the build backend) from the
# hash-pinned lock (make lock): a file whose hash is not in it is refused. Wheels only
# (psycopg2-binary, pyarrow): no compiler in the image.
COPY requirements-image.txt ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        -r requirements-image.txt
COPY pyproject.toml README.md ./
COPY sales_etl ./sales_etl
COPY tasks ./tasks
COPY flows ./flows
COPY blocks ./blocks
COPY deployments ./deployments
COPY devharness ./devharness
# The project itself: nothing more is resolved or downloaded (the lock installed its backend).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation --no-index .

FROM ${PYTHON_IMAGE} AS runtime
ARG APP_UID=10001
# The deployments' entrypoint flows/daily_sales.py:daily_sales is relative to this directory.
WORKDIR /opt/prefect/daily-sales-etl
# /data is the Docker pool's volume mount: a new named volume takes this directory's owner.
RUN groupadd --gid "${APP_UID}" app \
    && useradd --uid "${APP_UID}" --gid app --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root sales_etl ./sales_etl
COPY --chown=root:root tasks ./tasks
COPY --chown=root:root flows ./flows
COPY --chown=root:root blocks ./blocks
COPY --chown=root:root deployments ./deployments
# The demo API (the source of a run with no SALES_API_URL: the image's demo runs, CI's Docker and
# Kubernetes groups). Not its embedded PostgreSQL: that wheel (the `local` extra) is not installed.
COPY --chown=root:root devharness ./devharness
COPY --chown=root:root prefect.toml ./
# Everything the process writes goes to /tmp (an emptyDir under a read-only root filesystem);
# the lake and the warehouse are outside the container (DATA_LAKE_URL, WAREHOUSE_URL).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PREFECT_HOME=/tmp/prefect \
    DATA_LAKE_URL=/tmp/lake \
    ARROW_DEFAULT_MEMORY_POOL=jemalloc
USER ${APP_UID}:${APP_UID}
CMD ["python", "-m", "flows.daily_sales", "--help"]
