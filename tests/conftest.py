"""Real servers for the tests: one redis-server and one PostgreSQL per test session.

Each test gets a clean Redis database (FLUSHALL) and its own Postgres database (created from
scratch, dropped afterwards). A missing server binary fails with the install command.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fleet import embedded  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CORPUS = os.path.join(FIXTURES, "corpus")


@pytest.fixture(scope="session")
def session_tmp():
    d = tempfile.mkdtemp(prefix="rsky-test-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(session_tmp):
    try:
        srv = embedded.Redis(os.path.join(session_tmp, "redis"), embedded.free_port()).start()
    except embedded.ServerMissing as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def postgres_server(session_tmp):
    try:
        srv = embedded.Postgres(os.path.join(session_tmp, "pg"), embedded.free_port()).start()
    except embedded.ServerMissing as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()


@pytest.fixture
def redis_url(redis_server):
    """URL of a clean Redis database."""
    import redis

    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.close()
    return redis_server.url


@pytest.fixture
def database_url(postgres_server):
    """URL of a fresh, empty Postgres database, dropped after the test."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.url, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = postgres_server.url.rsplit("/", 1)[0] + "/" + name
    yield url
    with psycopg.connect(postgres_server.url, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
