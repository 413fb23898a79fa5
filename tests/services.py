"""The real PostgreSQL and Redis servers the scale-out tests use (this machine kind runs
them on their standard loopback ports; `.ci/run` starts them if they are down).

Every test gets a database of its own, created fresh and dropped afterwards, and a Redis
database number of its own is flushed before use. Override the servers with
DAVFS_TEST_POSTGRES (an admin URL) and DAVFS_TEST_REDIS.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

POSTGRES_ADMIN = os.environ.get(
    "DAVFS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DAVFS_TEST_REDIS", "redis://127.0.0.1:6379/9")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database; yields its URL and drops it afterwards."""
    name = f"davfs_test_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - turned into a clear failure
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {POSTGRES_ADMIN} is not usable ({exc}); start it or set DAVFS_TEST_POSTGRES"
        )
    try:
        yield make_url(POSTGRES_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not usable ({exc}); start it or set DAVFS_TEST_REDIS")
    finally:
        client.close()
    return REDIS_URL
