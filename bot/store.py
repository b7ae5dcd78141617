"""Durable state: which thread each run belongs to, what was announced, which events were seen.

One schema on SQLite (the embedded default) and PostgreSQL (several replicas), through
SQLAlchemy Core. Every state change that must happen once is a single conditional UPDATE,
so it is atomic on both backends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.models import Phase, Run, RunState

SCHEMA_VERSION = 1
_IN_CLAUSE_CHUNK = 500

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("namespace", sa.String(63), nullable=False),
    sa.Column("template", sa.String(253), nullable=False),
    sa.Column("parameters", sa.Text, nullable=False, default="{}"),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("thread_ts", sa.String(32)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("announced_at", sa.Float),
    # An announcement in progress: which replica holds it, and until when.
    sa.Column("claim_owner", sa.String(64)),
    sa.Column("claim_until", sa.Float),
)
sa.Index("runs_unannounced", runs.c.state, runs.c.created_at)

slack_events = sa.Table(
    "slack_events",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("seen_at", sa.Float, nullable=False),
)

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)


def async_database_url(url: str) -> str:
    """Map the SQLAlchemy-style URL users write to the async driver we ship."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _now() -> float:
    return time.time()


def _to_datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Store:
    """The runs table and its friends, on one SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        async_url = async_database_url(url)
        if async_url.startswith("sqlite"):
            engine = create_async_engine(async_url, connect_args={"timeout": 30})
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            engine = create_async_engine(async_url, pool_size=10, pool_pre_ping=True)
        return cls(engine)

    async def migrate(self) -> None:
        """Create the schema where it is missing and record its version."""
        async with self._engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            current = (
                await connection.execute(sa.select(sa.func.max(schema_info.c.version)))
            ).scalar()
            if current is None or current < SCHEMA_VERSION:
                await connection.execute(
                    schema_info.insert().values(version=SCHEMA_VERSION, applied_at=_now())
                )

    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()

    # -- runs --------------------------------------------------------------------------

    async def add_run(self, run: Run) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                runs.insert().values(
                    name=run.name,
                    namespace=run.namespace,
                    template=run.template,
                    parameters=json.dumps(run.parameters, sort_keys=True),
                    user_id=run.user_id,
                    channel_id=run.channel_id,
                    thread_ts=run.thread_ts,
                    state=run.state.value,
                    phase=run.phase.value,
                    created_at=run.created_at.timestamp(),
                )
            )

    async def get_run(self, name: str) -> Run | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(runs.select().where(runs.c.name == name))).first()
        return None if row is None else _run_from_row(row)

    async def set_state(self, name: str, state: RunState) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                runs.update().where(runs.c.name == name).values(state=state.value)
            )

    async def oldest_unannounced(self) -> datetime | None:
        """Creation time of the oldest submitted run not yet announced (None: nothing to poll)."""
        query = sa.select(sa.func.min(runs.c.created_at)).where(
            runs.c.state == RunState.RUNNING.value
        )
        async with self._engine.connect() as connection:
            return _to_datetime((await connection.execute(query)).scalar())

    async def unannounced_among(self, names: Iterable[str]) -> set[str]:
        """Which of these workflows are ours and still waiting for their announcement."""
        wanted = list(dict.fromkeys(names))
        found: set[str] = set()
        async with self._engine.connect() as connection:
            for start in range(0, len(wanted), _IN_CLAUSE_CHUNK):
                chunk = wanted[start : start + _IN_CLAUSE_CHUNK]
                query = sa.select(runs.c.name).where(
                    runs.c.name.in_(chunk), runs.c.state == RunState.RUNNING.value
                )
                found.update((await connection.execute(query)).scalars())
        return found

    async def claim_announcement(self, name: str, owner: str, lease_seconds: float) -> bool:
        """Take the right to announce a run; only one caller at a time can hold it.

        The claim is a lease: if its holder dies mid-announcement, the run becomes
        claimable again when the lease runs out instead of staying blocked forever.
        """
        now = _now()
        statement = (
            runs.update()
            .where(
                runs.c.name == name,
                runs.c.state == RunState.RUNNING.value,
                sa.or_(runs.c.claim_until.is_(None), runs.c.claim_until < now),
            )
            .values(claim_owner=owner, claim_until=now + lease_seconds)
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def mark_announced(
        self, name: str, owner: str, phase: Phase, finished_at: datetime | None
    ) -> bool:
        statement = (
            runs.update()
            .where(runs.c.name == name, runs.c.claim_owner == owner)
            .values(
                state=RunState.ANNOUNCED.value,
                phase=phase.value,
                finished_at=None if finished_at is None else finished_at.timestamp(),
                announced_at=_now(),
                claim_owner=None,
                claim_until=None,
            )
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount == 1

    async def release_claim(self, name: str, owner: str) -> None:
        statement = (
            runs.update()
            .where(runs.c.name == name, runs.c.claim_owner == owner)
            .values(claim_owner=None, claim_until=None)
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def count_runs(self) -> int:
        async with self._engine.connect() as connection:
            return int(
                (await connection.execute(sa.select(sa.func.count()).select_from(runs))).scalar()
                or 0
            )

    # -- Slack event deduplication ------------------------------------------------------

    async def remember_event(self, event_id: str) -> bool:
        """Record a Slack event id; False when it was seen before (a Slack retry)."""
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    slack_events.insert().values(event_id=event_id, seen_at=_now())
                )
        except sa.exc.IntegrityError:
            return False
        return True


def _run_from_row(row: sa.Row) -> Run:
    return Run(
        name=row.name,
        namespace=row.namespace,
        template=row.template,
        parameters=json.loads(row.parameters or "{}"),
        user_id=row.user_id,
        channel_id=row.channel_id,
        thread_ts=row.thread_ts,
        state=RunState(row.state),
        phase=Phase.parse(row.phase),
        created_at=_to_datetime(row.created_at) or datetime.now(UTC),
        finished_at=_to_datetime(row.finished_at),
        announced_at=_to_datetime(row.announced_at),
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """WAL lets readers run beside the one writer; busy_timeout waits instead of failing."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
