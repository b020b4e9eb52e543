"""A PostgreSQL server for the tests: the one at TEST_POSTGRES_URL, or a throwaway cluster.

``TEST_POSTGRES_URL`` defaults to ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``.
When nothing answers there, a throwaway cluster is created with the local PostgreSQL binaries
(``initdb``/``pg_ctl``, run as the ``postgres`` user when the tests run as root) on a free
loopback port, and removed afterwards. Without binaries the tests fail with instructions.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
HOW_TO = (
    "No PostgreSQL answers at {url} and no PostgreSQL binaries were found to start a throwaway "
    "one. Install PostgreSQL (Debian: apt-get install postgresql) or point TEST_POSTGRES_URL at "
    "a server where the user may create databases."
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
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


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl start on a free port; yields a superuser URL; stops and removes it."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError(HOW_TO.format(url=os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL)))
    root = Path(tempfile.mkdtemp(prefix="etl-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        pwd.getpwnam("postgres")
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -k {sockets} -c fsync=off"
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(root / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def server_url() -> Iterator[str]:
    """The admin URL of a PostgreSQL server the tests may create databases on."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL)
    if answers(url):
        yield url
        return
    with throwaway_cluster() as started:
        for _ in range(50):
            if answers(started):
                break
            time.sleep(0.1)
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
