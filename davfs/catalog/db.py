"""What every catalog module shares: the engine, transactions, the schema's migrations,
and a few statement helpers. Nothing here knows what a file is.

Every public method of a catalog module is one transaction (:meth:`Database.read` or
:meth:`Database.write`), so every change a client can observe is atomic. Write
transactions run one at a time (``dialect.py``), so every outcome of concurrent writes
is one of their serial orders.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, delete, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from davfs.catalog import schema
from davfs.catalog.dialect import WRITE, make_engine, schema_lock, single_instance
from davfs.catalog.schema import meta, nodes
from davfs.errors import CatalogError

ROOT_ID = 1
BATCH = 500
"""Ids per ``IN (...)`` list: far below every engine's parameter limit."""
_Key = TypeVar("_Key")


class LeanReader:
    """Runs prebuilt statements on one DBAPI cursor (see :meth:`Database.lean_read`)."""

    def __init__(self, db: Database, cursor: Any) -> None:
        self._db = db
        self._cursor = cursor

    def first(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...] | None:
        sql, positions = self._db.compiled(statement)
        args = params if positions is None else [params[name] for name in positions]
        self._cursor.execute(sql, args)
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        return row


class Database:
    """One catalog database: its engine, its schema brought up to date on open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._compiled: dict[Any, tuple[str, tuple[str, ...] | None]] = {}
        try:
            with schema_lock(self.engine):
                schema.metadata.create_all(self.engine)
                self._bring_schema_forward()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise CatalogError(
                f"cannot open the catalog {safe_url(url)}: {getattr(exc, 'orig', None) or exc}"
            ) from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with database_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def lean_read(self) -> Iterator[LeanReader]:
        """A read transaction on a pooled DBAPI connection, for the statements every
        request runs (a path lookup): SQLAlchemy's execution around one small SELECT
        costs about 0.1 ms, the statement itself 6 µs. Statements are compiled once."""
        dbapi = self.engine.dialect.dbapi
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise CatalogError(f"database error: {getattr(exc, 'orig', None) or exc}") from exc
        cursor = raw.cursor()
        explicit = self.engine.dialect.name == "sqlite"  # it runs in autocommit mode here (dialect.py)
        try:
            if explicit:
                cursor.execute("BEGIN")
            yield LeanReader(self, cursor)
        except dbapi.Error as exc:  # type: ignore[union-attr]
            raise CatalogError(f"database error: {exc}") from exc
        finally:
            try:
                if explicit:
                    cursor.execute("ROLLBACK")
                cursor.close()
            finally:
                raw.close()  # back to the pool, which rolls back on other engines

    def compiled(self, statement: Any) -> tuple[str, tuple[str, ...] | None]:
        """The SQL text of ``statement`` for this engine, and the order of its
        parameters (None: by name), compiled once."""
        found = self._compiled.get(statement)
        if found is None:
            compiled = statement.compile(dialect=self.engine.dialect)
            positions = tuple(compiled.positiontup) if compiled.positional else None
            found = self._compiled[statement] = (str(compiled), positions)
        return found

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with database_errors(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def single_instance(self, job: str) -> Iterator[bool]:
        """Whether this instance is the one to run ``job`` now (see the dialect)."""
        with database_errors(), single_instance(self.engine, job) as acquired:
            yield acquired

    def setting(self, name: str) -> str | None:
        """A value the drive keeps about itself in ``meta`` (e.g. which key encrypts it)."""
        with self.read() as conn:
            value = conn.scalar(select(meta.c.value).where(meta.c.key == f"setting:{name}"))
        return None if value is None else str(value)

    def set_setting(self, name: str, value: str) -> None:
        with self.write() as conn:
            conn.execute(delete(meta).where(meta.c.key == f"setting:{name}"))
            conn.execute(insert(meta).values(key=f"setting:{name}", value=value))

    def close(self) -> None:
        self.engine.dispose()

    def secret(self, name: str) -> bytes:
        """32 random bytes kept under ``name`` in the catalog, made on first use: a key
        every instance on this catalog shares (the Digest nonces' MAC key)."""
        key = f"secret:{name}"
        with self.write() as conn:
            value = conn.scalar(select(meta.c.value).where(meta.c.key == key))
            if value is None:
                value = secrets.token_hex(32)
                conn.execute(insert(meta).values(key=key, value=value))
        return bytes.fromhex(value)

    def schema_version(self) -> int:
        with self.read() as conn:
            return int(conn.scalar(select(meta.c.value).where(meta.c.key == "schema_version")) or 0)

    def _bring_schema_forward(self) -> None:
        with self.write() as conn:
            current = conn.scalar(select(meta.c.value).where(meta.c.key == "schema_version"))
            if current is None:
                conn.execute(insert(meta).values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
                now = time.time()
                conn.execute(
                    insert(nodes).values(
                        id=ROOT_ID,
                        parent_id=None,
                        name="",
                        is_dir=True,
                        version_id=None,
                        created=now,
                        modified=now,
                    )
                )
                continue_ids_after(conn)
                return
            version = int(current)
            if version > schema.SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog schema {version} is newer than this davfs "
                    f"({schema.SCHEMA_VERSION}); upgrade davfs"
                )
            while version < schema.SCHEMA_VERSION:
                step = schema.MIGRATIONS[version]
                for change in (step.ddl, step.backfill):
                    if change is not None:
                        change(conn)
                version += 1
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(version)))


@contextmanager
def database_errors() -> Iterator[None]:
    """The database failed (locked too long, disk full, I/O): a CatalogError, so callers
    see one error type and users one line. Constraint violations the methods expect
    (a name taken) are caught inside them first."""
    try:
        yield
    except SqlIntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise CatalogError(f"database error: {getattr(exc, 'orig', None) or exc}") from exc


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def batches(ids: Sequence[_Key]) -> Iterator[list[_Key]]:
    for i in range(0, len(ids), BATCH):
        yield list(ids[i : i + BATCH])


def continue_ids_after(conn: Connection) -> None:
    """After inserting explicit node ids, make the next automatic id follow the largest
    one (SQLite's AUTOINCREMENT does this itself; PostgreSQL's sequence does not)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "SELECT setval(pg_get_serial_sequence('nodes', 'id'), (SELECT max(id) FROM nodes))"
        )


def continue_sequence(conn: Connection, table: str, column: str, after: int) -> None:
    """Make the next automatic ``column`` value of ``table`` larger than ``after``."""
    if after <= 0:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), {int(after)})")
    elif conn.dialect.name == "sqlite":
        updated = conn.exec_driver_sql(
            f"UPDATE sqlite_sequence SET seq = max(seq, {int(after)}) WHERE name = '{table}'"
        ).rowcount
        if not updated:
            conn.exec_driver_sql(f"INSERT INTO sqlite_sequence (name, seq) VALUES ('{table}', {int(after)})")
