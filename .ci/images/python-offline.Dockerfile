# The Dockerfile's PYTHON_IMAGE where no registry is reachable: Debian bookworm (debootstrap,
# imported as local/bookworm) with Debian's Python 3.11 and a wheelhouse pip installs from
# offline (downloaded on the host by .ci/provision-docker).
ARG BASE_IMAGE=local/bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY wheelhouse /wheelhouse
ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheelhouse
