"""The two databases the store runs on (SQLite, PostgreSQL) behind one small interface.

SQL is written once, with PostgreSQL's numbered parameters (`$1`, `$2`, …); for SQLite
each becomes a `?` and the arguments are put in that order. Each backend is its driver
used directly (aiosqlite, asyncpg): no query builder or ORM sits between the store and
the database, which keeps the service's memory and per-statement cost small
(BENCHMARKS.md, round 6).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

# A row of a result: read by column name (`row["name"]`) on both backends.
Row = Any
StatementListener = Callable[[str], None]

_NUMBERED = re.compile(r"\$(\d+)")
_ROWS_PER_INSERT = 1000  # PostgreSQL takes at most 32,767 parameters a statement


@dataclass(frozen=True)
class DatabaseUrl:
    """A DATABASE_URL as people write it: `sqlite:///file.db`, `postgresql://user@host/db`.

    A driver suffix (`sqlite+aiosqlite`, `postgresql+asyncpg`) is accepted and ignored.
    """

    backend: str  # sqlite | postgresql
    path: str | None  # SQLite: the file, or ":memory:"
    dsn: str | None  # PostgreSQL: what asyncpg connects to
    password: str | None

    @classmethod
    def parse(cls, url: str) -> DatabaseUrl:
        scheme, _, rest = url.partition("://")
        backend = scheme.split("+", 1)[0].lower()
        if not rest and not url.endswith("://"):
            raise ValueError(f"not a database URL: {redact_url(url)!r}")
        if backend == "sqlite":
            # sqlite:///relative.db, sqlite:////absolute.db, sqlite:// (in memory)
            path = rest[1:] if rest.startswith("/") else rest
            path = unquote(path.split("?", 1)[0])
            return cls("sqlite", path or ":memory:", None, None)
        if backend in ("postgresql", "postgres"):
            parts = urlsplit(f"postgresql://{rest}")
            password = None if parts.password is None else unquote(parts.password)
            return cls("postgresql", None, f"postgresql://{rest}", password)
        raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")

    @property
    def in_memory(self) -> bool:
        return self.backend == "sqlite" and self.path in (":memory:", "")


def redact_url(url: str) -> str:
    """The URL with its password replaced, fit for logs and messages."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    user, at, host = authority.rpartition("@")
    if at and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{user}{at}{host}{slash}{tail}"


class Connection(Protocol):
    """One connection, inside a transaction or not."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Database(Protocol):
    """A pool of connections to one database (see `open_database`)."""

    dialect: str
    statement_listeners: list[StatementListener]

    def connection(self) -> Any:
        """`async with database.connection() as connection`: statements outside a transaction."""

    def transaction(self) -> Any:
        """`async with database.transaction() as connection`: committed at the end, or
        rolled back if the block raises."""

    async def insert_now(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> set[str]:
        """Insert each row whose key (its first column, the table's text primary key) is not
        in the table yet, in a transaction of its own, answered as soon as possible: what the
        requests written before a Slack ack need (see `SqliteDatabase.insert_now`). Returns
        the keys it inserted; the others were there already."""

    async def close(self) -> None: ...


def open_database(url: str) -> Database:
    """The database a DATABASE_URL names; nothing connects before the first statement."""
    parsed = DatabaseUrl.parse(url)
    if parsed.backend == "sqlite":
        return SqliteDatabase(parsed.path or ":memory:")
    return PostgresDatabase(parsed.dsn or "")


def in_list(dialect: str, column: str, first: int, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`column IN (values)` from parameter number `first` on, and the arguments it takes.

    PostgreSQL takes the list as one array parameter (one prepared statement whatever the
    length); SQLite has no arrays and takes one parameter per value.
    """
    if dialect == "postgresql":
        return f"{column} = ANY(${first}::text[])", [list(values)]
    marks = ", ".join(f"${number}" for number in range(first, first + len(values)))
    return f"{column} IN ({marks})", list(values)


def insert_statement(table: str, columns: Sequence[str], marks: str) -> str:
    """`INSERT … VALUES marks` that skips a row whose key (the first column) is taken."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {marks}"
        f" ON CONFLICT ({columns[0]}) DO NOTHING"
    )


def known_keys_statement(table: str, key: str) -> str:
    """Which of the keys in `$1`, a JSON array, the table holds (SQLite, which has no array
    parameters): one statement text whatever their number."""
    return f"SELECT {key} FROM {table} WHERE {key} IN (SELECT value FROM json_each($1))"


# -- SQLite --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqliteStatement:
    """A statement as SQLite takes it: `?` for each `$n`, and the arguments' order."""

    text: str
    order: tuple[int, ...] | None  # the argument behind each `?`; None: as given

    def arguments(self, args: Sequence[Any]) -> Sequence[Any]:
        return args if self.order is None else tuple(args[index] for index in self.order)


@lru_cache(maxsize=512)
def sqlite_statement(sql: str) -> SqliteStatement:
    """`$1`, `$2`, … → `?`. SQLite binds anonymous parameters fastest: its numbered ones
    (`?1`) cost it time growing with their count squared (3,370 of them: 18 ms, not 2.5)."""
    parts = _NUMBERED.split(sql)  # text, number, text, number, …, text
    order = tuple(int(number) - 1 for number in parts[1::2])
    in_order = order == tuple(range(len(order)))
    return SqliteStatement("?".join(parts[0::2]), None if in_order else order)


def _pragmas(*, wait_seconds: float) -> tuple[str, ...]:
    """WAL lets readers run beside the one writer; the busy timeout waits for the lock."""
    return (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA busy_timeout={int(wait_seconds * 1000)}",
        "PRAGMA synchronous=NORMAL",
    )


class _ListenedConnection:
    """A driver's connection, and who hears each statement sent through it."""

    def __init__(self, connection: Any, listeners: list[StatementListener]) -> None:
        self._connection = connection
        self._listeners = listeners

    def _heard(self, sql: str) -> str:
        return _heard(self._listeners, sql)


def _heard(listeners: list[StatementListener], sql: str) -> str:
    for listener in listeners:
        listener(sql)
    return sql


class _SqliteConnection(_ListenedConnection):
    def _statement(self, sql: str) -> SqliteStatement:
        return sqlite_statement(self._heard(sql))

    async def execute(self, sql: str, *args: Any) -> int:
        statement = self._statement(sql)
        cursor = await self._connection.execute(statement.text, statement.arguments(args))
        return int(cursor.rowcount)  # the cursor is left to the garbage collector: one hop

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        statement = self._statement(sql)
        rows = await self._connection.execute_fetchall(statement.text, statement.arguments(args))
        return list(rows)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        statement = self._statement(sql)
        await self._connection.executemany(
            statement.text, [statement.arguments(row) for row in rows]
        )


class SqliteDatabase:
    """One connection (SQLite has one writer), its statements taken in turn.

    Up to 15 connections would only fight the event loop for the GIL and sleep in the busy
    handler. Transactions begin IMMEDIATE: the write lock is taken at the start, so a
    transaction that reads and then writes never fails to upgrade its lock.
    """

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.statement_listeners: list[StatementListener] = []
        self._connection: Any = None
        self._turn = asyncio.Lock()
        self._request_writer: _SqliteRequestWriter | None = None

    @property
    def in_memory(self) -> bool:
        return self.path in (":memory:", "")

    async def _connect(self) -> Any:
        import aiosqlite

        if self._connection is None:
            connection = await aiosqlite.connect(self.path, timeout=30, isolation_level=None)
            connection.row_factory = sqlite3.Row
            try:
                for pragma in _pragmas(wait_seconds=30):
                    await connection.execute(pragma)
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
        elif self._connection.in_transaction:
            # A transaction whose end was lost (its task was cancelled mid-rollback).
            await self._connection.rollback()
        return self._connection

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._turn:
            yield _SqliteConnection(await self._connect(), self.statement_listeners)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._turn:
            connection = await self._connect()
            await connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteConnection(connection, self.statement_listeners)
            except BaseException:
                await asyncio.shield(connection.rollback())
                raise
            await connection.commit()

    async def insert_now(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> set[str]:
        """Written without waiting for a busy event loop (see `_SqliteRequestWriter`).

        The keys already there are read first, in the same `BEGIN IMMEDIATE` transaction
        (no other writer can add one in between), then every row goes through one prepared
        single-row INSERT (`executemany`). A multi-row INSERT is a new statement text for
        each batch size, which SQLite parses anew: 6.5 ms for 267 requests, against 1 ms.
        """
        known = known_keys_statement(table, columns[0])
        insert = insert_statement(table, columns, "(" + ", ".join("?" * len(columns)) + ")")
        keys = [row[0] for row in rows]
        if self.in_memory:  # one connection holds the whole database
            async with self.transaction() as connection:
                taken = {row[0] for row in await connection.fetch(known, json.dumps(keys))}
                await connection.executemany(insert, rows)
            return set(keys) - taken
        if self._request_writer is None:
            self._request_writer = _SqliteRequestWriter(self.path)
        taken = await self._request_writer.insert(
            sqlite_statement(_heard(self.statement_listeners, known)).text,
            json.dumps(keys),
            _heard(self.statement_listeners, insert),
            rows,
        )
        return set(keys) - taken

    @property
    def writes_waited(self) -> int:
        """`insert_now` batches that found the write lock taken and went to their thread."""
        return 0 if self._request_writer is None else self._request_writer.waited

    async def close(self) -> None:
        if self._request_writer is not None:
            await self._request_writer.close()
            self._request_writer = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()


@dataclass(frozen=True)
class _Insert:
    known: str
    keys: str
    insert: str
    rows: Sequence[Sequence[Any]]


class _SqliteRequestWriter:
    """Statements written to the SQLite file without waiting for a busy event loop.

    Each is first tried right on the event loop, through a connection that never waits for
    a lock (busy timeout 0) and never checkpoints the WAL (so a commit makes no fsync under
    `synchronous=NORMAL`): a few hundred rows take a few milliseconds and cannot stall the
    loop. Only when another connection holds the write lock does the statement go to a
    connection of its own thread, which waits for the lock; a thread hop's answer waits
    behind every callback of a burst, tens of milliseconds (BENCHMARKS.md, round 3).
    """

    def __init__(self, path: str) -> None:
        self._inline = self._open(path, wait_seconds=0)
        self._inline.execute("PRAGMA wal_autocheckpoint=0")
        self._path = path
        self._waiting: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request-writer")
        self.waited = 0

    @staticmethod
    def _open(path: str, *, wait_seconds: float) -> sqlite3.Connection:
        connection = sqlite3.connect(
            path, timeout=wait_seconds, isolation_level=None, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        for pragma in _pragmas(wait_seconds=wait_seconds):
            connection.execute(pragma)
        return connection

    @staticmethod
    def _insert(connection: sqlite3.Connection, write: _Insert) -> set[str]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            taken = {row[0] for row in connection.execute(write.known, (write.keys,))}
            connection.executemany(write.insert, write.rows)
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
        return taken

    def _insert_waiting(self, write: _Insert) -> set[str]:
        if self._waiting is None:
            self._waiting = self._open(self._path, wait_seconds=30)
        return self._insert(self._waiting, write)

    async def insert(
        self, known: str, keys: str, insert: str, rows: Sequence[Sequence[Any]]
    ) -> set[str]:
        """Run `known` (on the JSON array `keys`), then `insert` for each row; the keys
        `known` found."""
        write = _Insert(known, keys, insert, rows)
        try:
            return self._insert(self._inline, write)
        except sqlite3.OperationalError as error:
            if not _is_locked(error):
                raise
        self.waited += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._insert_waiting, write)

    def _close_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting.close()

    async def close(self) -> None:
        self._inline.close()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_waiting)
        self._thread.shutdown(wait=True)


def _is_locked(error: sqlite3.OperationalError) -> bool:
    """SQLite's SQLITE_BUSY / SQLITE_LOCKED: another connection is writing."""
    message = str(error).lower()
    return "locked" in message or "busy" in message


# -- PostgreSQL ----------------------------------------------------------------------------


class _PostgresConnection(_ListenedConnection):
    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._connection.execute(self._heard(sql), *args)
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the count is the last word.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._connection.fetch(self._heard(sql), *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._connection.fetchrow(self._heard(sql), *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._connection.executemany(self._heard(sql), rows)


class PostgresDatabase:
    """An asyncpg pool of up to 10 connections, opened at the first statement; statements
    time out after 30 s, connecting after 10 s. A connection the server closed (a restart)
    is replaced when it is next taken from the pool."""

    dialect = "postgresql"

    def __init__(self, dsn: str, *, max_connections: int = 10) -> None:
        self._dsn = dsn
        self._max_connections = max_connections
        self.statement_listeners: list[StatementListener] = []
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._max_connections,
                        timeout=10,
                        command_timeout=30,
                    )
        return self._pool

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        pool = await self._get_pool()
        async with pool.acquire() as connection:
            yield connection

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._acquire() as connection:
            yield _PostgresConnection(connection, self.statement_listeners)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._acquire() as connection, connection.transaction():
            yield _PostgresConnection(connection, self.statement_listeners)

    async def insert_now(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> set[str]:
        """One multi-row INSERT … RETURNING per 1,000 rows: exact whatever other replicas
        insert meanwhile."""
        inserted: set[str] = set()
        width = len(columns)
        async with self.transaction() as connection:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                marks = ", ".join(
                    "(" + ", ".join(f"${row * width + column + 1}" for column in range(width)) + ")"
                    for row in range(len(chunk))
                )
                returned = await connection.fetch(
                    insert_statement(table, columns, marks) + f" RETURNING {columns[0]}",
                    *(value for row in chunk for value in row),
                )
                inserted.update(row[0] for row in returned)
        return inserted

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
