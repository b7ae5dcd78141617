"""Durable state: which thread each run belongs to, what was announced, which events were seen.

One schema on SQLite (the embedded default) and PostgreSQL (several replicas), through
SQLAlchemy Core. Every state change that must happen once is a single conditional UPDATE,
so it is atomic on both backends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as sa_postgresql
from sqlalchemy.dialects import sqlite as sa_sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.models import Phase, Run, RunInput, RunState

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
    sa.Column("root_ts", sa.String(32)),  # the bot's status message (schema step 3)
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

# Files from Slack that became a run's input artifacts: where they went, size and SHA-256.
run_inputs = sa.Table(
    "run_inputs",
    metadata,
    sa.Column("run_name", sa.String(63), primary_key=True),
    sa.Column("artifact", sa.String(253), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("slack_file_id", sa.String(32), nullable=False, default=""),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

# Short exclusive jobs shared by replicas (e.g. one poll cycle at a time across all of them).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# What people asked of a run from Slack, one row per run that was ever acted on: the claims
# that make two clicks one action (stop, resubmit) and the last progress shown in its root.
run_controls = sa.Table(
    "run_controls",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("shutdown", sa.String(16)),  # stop | terminate, for the current attempt
    sa.Column("shutdown_by", sa.String(64)),
    sa.Column("resubmitted_as", sa.String(63)),
    sa.Column("resubmit_by", sa.String(64)),
    sa.Column("resubmit_until", sa.Float),  # a resubmission in progress (a lease)
    sa.Column("progress_shown", sa.Text),
    sa.Column("progress_at", sa.Float),
)

# Replicas starting together must not migrate at the same time (PostgreSQL advisory lock key).
_MIGRATION_LOCK_KEY = 0x61726763  # "argc"


def _create_initial_tables(connection: sa.Connection) -> None:
    metadata.create_all(connection, tables=[runs, slack_events], checkfirst=True)


def _create_leases(connection: sa.Connection) -> None:
    metadata.create_all(connection, tables=[leases], checkfirst=True)


def _add_run_inputs(connection: sa.Connection) -> None:
    """Runs started from files: the bot's status message (`root_ts`) and the input files.

    Idempotent: a database created from the current `runs` definition already has the column.
    """
    columns = {column["name"] for column in sa.inspect(connection).get_columns("runs")}
    if "root_ts" not in columns:
        connection.execute(sa.text("ALTER TABLE runs ADD COLUMN root_ts VARCHAR(32)"))
    metadata.create_all(connection, tables=[run_inputs], checkfirst=True)


# Numbered schema changes, applied in order at start-up; never edit a released step, add one.
# Tables added later are also created from `metadata`; changes to existing tables (new
# columns, indexes) must be steps here so that existing databases get them.
MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (
    _create_initial_tables,
    _create_leases,
    _add_run_inputs,
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
            engine = create_async_engine(
                async_url,
                pool_size=10,
                pool_pre_ping=True,  # survive a database restart: stale connections are replaced
                connect_args={"timeout": 10, "command_timeout": 30},
            )
        return cls(engine)

    async def migrate(self) -> None:
        """Apply the numbered migrations this database has not seen yet, under a lock."""
        async with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(lambda sync: schema_info.create(sync, checkfirst=True))
            current = (
                await connection.execute(sa.select(sa.func.max(schema_info.c.version)))
            ).scalar() or 0
            for version, step in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                await connection.run_sync(step)
                await connection.execute(
                    schema_info.insert().values(version=version, applied_at=_now())
                )
            await connection.run_sync(metadata.create_all)

    @property
    def latest_schema_version(self) -> int:
        return len(MIGRATIONS)

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
                    root_ts=run.root_ts,
                    state=run.state.value,
                    phase=run.phase.value,
                    created_at=run.created_at.timestamp(),
                )
            )

    async def get_run(self, name: str) -> Run | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(runs.select().where(runs.c.name == name))).first()
            if row is None:
                return None
            query = (
                run_inputs.select()
                .where(run_inputs.c.run_name == name)
                .order_by(run_inputs.c.position)
            )
            inputs = [_input_from_row(item) for item in await connection.execute(query)]
        return _run_from_row(row).model_copy(update={"inputs": tuple(inputs)})

    async def add_inputs(self, name: str, inputs: Iterable[RunInput]) -> None:
        """Record the uploaded input files of a run (their size and SHA-256 are known)."""
        rows = [
            {
                "run_name": name,
                "artifact": item.artifact,
                "position": position,
                "file_name": item.file_name,
                "object_key": item.key,
                "slack_file_id": item.slack_file_id,
                "size": item.size or 0,
                "sha256": item.sha256 or "",
            }
            for position, item in enumerate(inputs)
        ]
        if rows:
            async with self._engine.begin() as connection:
                await connection.execute(run_inputs.insert(), rows)

    async def inputs_uploaded(self, name: str) -> bool:
        """`uploading` → `submitting`, restarting the clock: a long upload is not a stale submit."""
        statement = (
            runs.update()
            .where(runs.c.name == name, runs.c.state == RunState.UPLOADING.value)
            .values(state=RunState.SUBMITTING.value, created_at=_now())
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).rowcount == 1

    async def set_state(self, name: str, state: RunState) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                runs.update().where(runs.c.name == name).values(state=state.value)
            )

    async def waiting_runs(self) -> dict[str, datetime]:
        """Every submitted run not announced yet, with its creation time: one query per cycle."""
        query = sa.select(runs.c.name, runs.c.created_at).where(
            runs.c.state == RunState.RUNNING.value
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {row.name: _to_datetime(row.created_at) or datetime.now(UTC) for row in rows}

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

    async def count_waiting(self) -> int:
        """Runs started and not announced yet (what the poller is still tracking)."""
        query = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(runs.c.state == RunState.RUNNING.value)
        )
        async with self._engine.connect() as connection:
            return int((await connection.execute(query)).scalar() or 0)

    async def schema_version(self) -> int | None:
        """The recorded schema version, or None when the schema was never created."""
        async with self._engine.connect() as connection:
            exists = await connection.run_sync(
                lambda sync: sa.inspect(sync).has_table(schema_info.name)
            )
            if not exists:
                return None
            return (
                await connection.execute(sa.select(sa.func.max(schema_info.c.version)))
            ).scalar()

    # -- leases --------------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Hold `name` for `seconds` unless another live owner holds it; renewing is allowed."""
        now = _now()
        renew = (
            leases.update()
            .where(
                leases.c.name == name,
                sa.or_(leases.c.owner == owner, leases.c.expires_at < now),
            )
            .values(owner=owner, expires_at=now + seconds)
        )
        async with self._engine.begin() as connection:
            if (await connection.execute(renew)).rowcount == 1:
                return True
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    leases.insert().values(name=name, owner=owner, expires_at=now + seconds)
                )
        except sa.exc.IntegrityError:
            return False
        return True

    # -- runs whose start was interrupted ---------------------------------------------------

    async def stale_submissions(self, older_than_seconds: float, limit: int = 50) -> list[Run]:
        """Runs still `submitting` long after they began: the bot died around the create call."""
        query = (
            runs.select()
            .where(
                runs.c.state == RunState.SUBMITTING.value,
                runs.c.created_at < _now() - older_than_seconds,
            )
            .order_by(runs.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return [_run_from_row(row) for row in (await connection.execute(query))]

    async def settle_submission(self, name: str, state: RunState) -> bool:
        """Move a run out of `submitting` once; False when another replica did it first."""
        statement = (
            runs.update()
            .where(runs.c.name == name, runs.c.state == RunState.SUBMITTING.value)
            .values(state=state.value)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).rowcount == 1

    # -- lifecycle: lists, retries, stop / resubmit claims, progress ------------------------

    async def recent_runs(
        self, *, channel_id: str | None = None, user_id: str | None = None, limit: int = 50
    ) -> list[Run]:
        """The newest runs that reached Argo, in a channel and/or of a person."""
        query = runs.select().where(runs.c.state != RunState.REJECTED.value)
        if channel_id is not None:
            query = query.where(runs.c.channel_id == channel_id)
        if user_id is not None:
            query = query.where(runs.c.user_id == user_id)
        query = query.order_by(runs.c.created_at.desc()).limit(limit)
        async with self._engine.connect() as connection:
            return [_run_from_row(row) for row in await connection.execute(query)]

    async def running_runs(self, limit: int = 500) -> list[Run]:
        """Runs Argo has and nobody announced yet, oldest first (what progress refreshes)."""
        query = (
            runs.select()
            .where(runs.c.state == RunState.RUNNING.value)
            .order_by(runs.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return [_run_from_row(row) for row in await connection.execute(query)]

    async def begin_retry(self, name: str, owner: str, lease_seconds: float) -> bool:
        """Claim the retry of a run announced as failed; two clicks, one winner.

        The claim is a lease on the run (state `retrying`): if its holder dies before Argo
        answers, the run can be retried again once the lease runs out.
        """
        now = _now()
        statement = (
            runs.update()
            .where(
                runs.c.name == name,
                sa.or_(
                    sa.and_(
                        runs.c.state == RunState.ANNOUNCED.value,
                        runs.c.phase.in_([Phase.FAILED.value, Phase.ERROR.value]),
                    ),
                    sa.and_(runs.c.state == RunState.RETRYING.value, runs.c.claim_until < now),
                ),
            )
            .values(
                state=RunState.RETRYING.value, claim_owner=owner, claim_until=now + lease_seconds
            )
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).rowcount == 1

    async def end_retry(self, name: str, owner: str, *, retried: bool) -> None:
        """Argo answered: the run is running again (announced anew at its end), or it is not."""
        claimed = (
            runs.update()
            .where(
                runs.c.name == name,
                runs.c.state == RunState.RETRYING.value,
                runs.c.claim_owner == owner,
            )
            .values(claim_owner=None, claim_until=None)
        )
        async with self._engine.begin() as connection:
            if not retried:
                await connection.execute(claimed.values(state=RunState.ANNOUNCED.value))
                return
            await connection.execute(
                claimed.values(
                    state=RunState.RUNNING.value,
                    phase=Phase.RUNNING.value,
                    finished_at=None,
                    announced_at=None,
                )
            )
            await connection.execute(
                run_controls.update()
                .where(run_controls.c.name == name)
                .values(shutdown=None, shutdown_by=None)
            )

    async def stale_retries(self) -> list[Run]:
        """Retries whose replica died between claiming them and hearing from Argo."""
        query = runs.select().where(
            runs.c.state == RunState.RETRYING.value, runs.c.claim_until < _now()
        )
        async with self._engine.connect() as connection:
            return [_run_from_row(row) for row in await connection.execute(query)]

    async def settle_retry(self, name: str, *, retried: bool) -> bool:
        """Finish a stale retry claim the way Argo says it went; False if someone else did."""
        values: dict[str, object] = {"state": RunState.ANNOUNCED.value}
        if retried:
            values = {
                "state": RunState.RUNNING.value,
                "phase": Phase.RUNNING.value,
                "finished_at": None,
                "announced_at": None,
            }
        statement = (
            runs.update()
            .where(
                runs.c.name == name,
                runs.c.state == RunState.RETRYING.value,
                runs.c.claim_until < _now(),
            )
            .values(claim_owner=None, claim_until=None, **values)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).rowcount == 1

    async def controls(self, names: Iterable[str]) -> dict[str, RunControls]:
        wanted = list(dict.fromkeys(names))
        found: dict[str, RunControls] = {}
        async with self._engine.connect() as connection:
            for start in range(0, len(wanted), _IN_CLAUSE_CHUNK):
                chunk = wanted[start : start + _IN_CLAUSE_CHUNK]
                query = run_controls.select().where(run_controls.c.name.in_(chunk))
                for row in await connection.execute(query):
                    found[row.name] = _controls_from_row(row)
        return found

    async def claim_shutdown(
        self, name: str, strategy: str, user_id: str
    ) -> tuple[bool, RunControls]:
        """Record a stop or terminate request unless one is already in (terminate may follow
        a stop); False and what was asked before when it is a repeat."""
        earlier = ["stop"] if strategy == "terminate" else []
        statement = (
            run_controls.update()
            .where(
                run_controls.c.name == name,
                sa.or_(run_controls.c.shutdown.is_(None), run_controls.c.shutdown.in_(earlier)),
            )
            .values(shutdown=strategy, shutdown_by=user_id)
        )
        return await self._claim_control(name, statement)

    async def release_shutdown(self, name: str, strategy: str, previous: RunControls) -> None:
        """Argo refused the request: put back what was recorded before it."""
        statement = (
            run_controls.update()
            .where(run_controls.c.name == name, run_controls.c.shutdown == strategy)
            .values(shutdown=previous.shutdown, shutdown_by=previous.shutdown_by)
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def claim_resubmit(
        self, name: str, user_id: str, lease_seconds: float
    ) -> tuple[bool, RunControls]:
        """Take the one resubmission of a run; False and the earlier one when it is a repeat."""
        now = _now()
        statement = (
            run_controls.update()
            .where(
                run_controls.c.name == name,
                run_controls.c.resubmitted_as.is_(None),
                sa.or_(
                    run_controls.c.resubmit_until.is_(None),
                    run_controls.c.resubmit_until < now,
                ),
            )
            .values(resubmit_by=user_id, resubmit_until=now + lease_seconds)
        )
        return await self._claim_control(name, statement)

    async def end_resubmit(self, name: str, new_name: str | None) -> None:
        """The resubmission started `new_name`, or (None) it failed and may be tried again."""
        values: dict[str, object] = {"resubmit_until": None, "resubmitted_as": new_name}
        if new_name is None:
            values["resubmit_by"] = None
        async with self._engine.begin() as connection:
            await connection.execute(
                run_controls.update().where(run_controls.c.name == name).values(**values)
            )

    async def claim_progress(
        self, name: str, shown: str, *, min_gap: float, refresh_gap: float
    ) -> bool:
        """May this replica edit the run's thread root now? At most once per `min_gap`, and
        only when what it shows changed (or `refresh_gap` passed: the elapsed time moved)."""
        now = _now()
        c = run_controls.c
        statement = (
            run_controls.update()
            .where(
                c.name == name,
                sa.or_(
                    c.progress_at.is_(None),
                    sa.and_(
                        c.progress_at <= now - min_gap,
                        sa.or_(
                            c.progress_shown.is_(None),
                            c.progress_shown != shown,
                            c.progress_at <= now - refresh_gap,
                        ),
                    ),
                ),
            )
            .values(progress_shown=shown, progress_at=now)
        )
        claimed, _ = await self._claim_control(name, statement)
        return claimed

    async def _claim_control(self, name: str, statement: sa.Update) -> tuple[bool, RunControls]:
        """Run one conditional UPDATE on the run's controls row (created when missing)."""
        dialect = self._engine.dialect.name
        insert = (sa_postgresql.insert if dialect == "postgresql" else sa_sqlite.insert)(
            run_controls
        )
        async with self._engine.begin() as connection:
            await connection.execute(insert.values(name=name).on_conflict_do_nothing())
            claimed = (await connection.execute(statement)).rowcount == 1
            row = (
                await connection.execute(run_controls.select().where(run_controls.c.name == name))
            ).one()
        return claimed, _controls_from_row(row)

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


@dataclass(frozen=True)
class RunControls:
    """What was asked of a run from Slack (see the `run_controls` table)."""

    shutdown: str | None = None
    shutdown_by: str | None = None
    resubmitted_as: str | None = None
    resubmit_by: str | None = None
    progress_shown: str | None = None  # what the run's root shows (its progress key)
    progress_at: float | None = None  # when a replica last edited the run's root


def _controls_from_row(row: sa.Row) -> RunControls:
    return RunControls(
        shutdown=row.shutdown,
        shutdown_by=row.shutdown_by,
        resubmitted_as=row.resubmitted_as,
        resubmit_by=row.resubmit_by,
        progress_shown=row.progress_shown,
        progress_at=row.progress_at,
    )


def _run_from_row(row: sa.Row) -> Run:
    return Run(
        name=row.name,
        namespace=row.namespace,
        template=row.template,
        parameters=json.loads(row.parameters or "{}"),
        user_id=row.user_id,
        channel_id=row.channel_id,
        thread_ts=row.thread_ts,
        root_ts=row.root_ts,
        state=RunState(row.state),
        phase=Phase.parse(row.phase),
        created_at=_to_datetime(row.created_at) or datetime.now(UTC),
        finished_at=_to_datetime(row.finished_at),
        announced_at=_to_datetime(row.announced_at),
    )


def _input_from_row(row: sa.Row) -> RunInput:
    return RunInput(
        artifact=row.artifact,
        file_name=row.file_name,
        key=row.object_key,
        slack_file_id=row.slack_file_id,
        size=row.size,
        sha256=row.sha256,
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """WAL lets readers run beside the one writer; busy_timeout waits instead of failing."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
