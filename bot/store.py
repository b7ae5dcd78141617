"""Durable state: which thread each run belongs to, what was announced, which events were seen.

One schema on SQLite (the embedded default) and PostgreSQL (several replicas), through
SQLAlchemy Core. Every state change that must happen once is a single conditional UPDATE,
so it is atomic on both backends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.models import AuditEntry, Phase, Run, RunInput, RunState

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

# What people asked for, written before the bot acknowledges them: a replica that dies
# after the ack leaves the request here, and the poll cycle of any replica finishes it.
# `run_name` links the run it became; `claim_until` is the lease of whoever works on it.
run_requests = sa.Table(
    "run_requests",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # command | message | form
    sa.Column("payload", sa.Text, nullable=False),  # JSON: what is needed to start it again
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | done | failed
    sa.Column("run_name", sa.String(63)),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("claim_owner", sa.String(64)),
    sa.Column("claim_until", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("run_requests_pending", run_requests.c.state, run_requests.c.claim_until)

# Who did what from Slack or through the exit hook, and how it went (schema step 5): read by
# `/argo audit [workflow]`. `target` is the workflow when there is one, else the template.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(64)),  # a Slack user id; none for the exit hook
    sa.Column("channel", sa.String(64)),
    sa.Column("action", sa.String(16), nullable=False),  # command | button | file | hook | modal
    sa.Column("target", sa.String(253)),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | denied | invalid | error
    sa.Column("detail", sa.Text, nullable=False, default=""),
)
sa.Index("audit_log_by_target", audit_log.c.target, audit_log.c.id)
# Rate limits count a person's or a channel's runs of the last hour: one index range each.
_runs_by_user = sa.Index("runs_by_user", runs.c.user_id, runs.c.created_at)
_runs_by_channel = sa.Index("runs_by_channel", runs.c.channel_id, runs.c.created_at)

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


def _add_run_requests(connection: sa.Connection) -> None:
    metadata.create_all(connection, tables=[run_requests], checkfirst=True)


def _add_audit_log(connection: sa.Connection) -> None:
    """The audit trail, and the `runs` indexes that rate limits count with."""
    metadata.create_all(connection, tables=[audit_log], checkfirst=True)
    _runs_by_user.create(connection, checkfirst=True)
    _runs_by_channel.create(connection, checkfirst=True)


# Numbered schema changes, applied in order at start-up; never edit a released step, add one.
# Tables added later are also created from `metadata`; changes to existing tables (new
# columns, indexes) must be steps here so that existing databases get them.
MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (
    _create_initial_tables,
    _create_leases,
    _add_run_inputs,
    _add_run_requests,
    _add_audit_log,
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

    def __init__(self, engine: AsyncEngine, *, sqlite_file: str | None = None) -> None:
        self._engine = engine
        # SQLite: requests are written before the ack through a plain connection on a thread
        # of their own, one thread hop per batch (see `add_requests`).
        self._sqlite_file = sqlite_file
        self._request_writer: _SqliteWriter | None = None

    @classmethod
    def from_url(cls, url: str) -> Store:
        async_url = async_database_url(url)
        if async_url.startswith("sqlite"):
            # SQLite has one writer: one pooled connection (one aiosqlite thread) instead of
            # up to 15 that fight the event loop for the GIL and sleep in the busy handler.
            in_memory = make_url(async_url).database in (None, "", ":memory:")
            pool = {} if in_memory else {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
            engine = create_async_engine(async_url, connect_args={"timeout": 30}, **pool)
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            if not in_memory:
                return cls(engine, sqlite_file=make_url(async_url).database)
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
        if self._request_writer is not None:
            await self._request_writer.close()
        await self._engine.dispose()

    # -- runs --------------------------------------------------------------------------

    async def add_run(self, run: Run, request: RequestClaim | None = None) -> None:
        """Record a run; with `request`, also mark the request it came from as done.

        Both happen in one transaction, and only while `request` is still held by the one
        starting the run, so a request taken over by another replica becomes one run only.
        """
        async with self._engine.begin() as connection:
            if request is not None:
                linked = await connection.execute(
                    run_requests.update()
                    .where(
                        run_requests.c.id == request.id,
                        run_requests.c.state == "pending",
                        run_requests.c.claim_owner == request.claim,
                    )
                    .values(state="done", run_name=run.name)
                )
                if linked.rowcount != 1:
                    raise RequestSuperseded(request.id)
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

    async def run_namespaces(self, names: Iterable[str]) -> dict[str, str]:
        """Name → namespace of the stored runs among `names`: what exit hooks need checked."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, str] = {}
        async with self._engine.connect() as connection:
            for chunk in _in_chunks(wanted):
                query = sa.select(runs.c.name, runs.c.namespace).where(runs.c.name.in_(chunk))
                found.update((row.name, row.namespace) for row in await connection.execute(query))
        return found

    async def get_runs(self, names: Iterable[str]) -> dict[str, Run]:
        """Several runs with their input files, in two queries per chunk of names."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, Run] = {}
        inputs: dict[str, list[RunInput]] = {}
        async with self._engine.connect() as connection:
            for chunk in _in_chunks(wanted):
                for row in await connection.execute(runs.select().where(runs.c.name.in_(chunk))):
                    found[row.name] = _run_from_row(row)
                query = (
                    run_inputs.select()
                    .where(run_inputs.c.run_name.in_(chunk))
                    .order_by(run_inputs.c.run_name, run_inputs.c.position)
                )
                for row in await connection.execute(query):
                    inputs.setdefault(row.run_name, []).append(_input_from_row(row))
        return {
            name: run.model_copy(update={"inputs": tuple(inputs[name])}) if name in inputs else run
            for name, run in found.items()
        }

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

    async def interrupted_claims(self, names: Iterable[str]) -> set[str]:
        """Which of these runs were claimed by a replica whose claim ran out without being
        given back or finished: it died mid-announcement, maybe after posting."""
        wanted = sorted(set(names))
        found: set[str] = set()
        now = _now()
        async with self._engine.connect() as connection:
            for chunk in _in_chunks(wanted):
                query = sa.select(runs.c.name).where(
                    runs.c.name.in_(chunk),
                    runs.c.state == RunState.RUNNING.value,
                    runs.c.claim_owner.is_not(None),
                    runs.c.claim_until < now,
                )
                found.update((await connection.execute(query)).scalars())
        return found

    async def claim_announcements(
        self, names: Iterable[str], owner: str, lease_seconds: float
    ) -> set[str]:
        """Take the right to announce these runs; the names won. One statement per chunk.

        The claim is a lease: if its holder dies mid-announcement, the run becomes claimable
        again when the lease runs out instead of staying blocked forever. UPDATE … RETURNING
        (SQLite ≥ 3.35, PostgreSQL): each row is claimed atomically, so replicas claiming
        overlapping batches at once never both win the same run.
        """
        wanted = sorted(set(names))  # one lock order for every replica's batch
        won: set[str] = set()
        now = _now()
        async with self._engine.begin() as connection:
            for chunk in _in_chunks(wanted):
                statement = (
                    runs.update()
                    .where(
                        runs.c.name.in_(chunk),
                        runs.c.state == RunState.RUNNING.value,
                        sa.or_(runs.c.claim_until.is_(None), runs.c.claim_until < now),
                    )
                    .values(claim_owner=owner, claim_until=now + lease_seconds)
                    .returning(runs.c.name)
                )
                won.update((await connection.execute(statement)).scalars())
        return won

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

    async def mark_many_announced(
        self, marks: Iterable[tuple[str, Phase, datetime | None]], owner: str
    ) -> None:
        """`mark_announced` for several runs (name, phase, finished_at) in one transaction."""
        rows = [
            {
                "mark_name": name,
                "mark_phase": phase.value,
                "mark_finished_at": None if finished_at is None else finished_at.timestamp(),
            }
            for name, phase, finished_at in marks
        ]
        if not rows:
            return
        statement = (
            runs.update()
            .where(runs.c.name == sa.bindparam("mark_name"), runs.c.claim_owner == owner)
            .values(
                state=RunState.ANNOUNCED.value,
                phase=sa.bindparam("mark_phase"),
                finished_at=sa.bindparam("mark_finished_at"),
                announced_at=_now(),
                claim_owner=None,
                claim_until=None,
            )
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement, rows)

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

    async def stale_runs(
        self, state: RunState, older_than_seconds: float, limit: int = 50
    ) -> list[Run]:
        """Runs still `submitting` or `uploading` long after they began: their replica died
        around the create call, or while copying files."""
        query = (
            runs.select()
            .where(runs.c.state == state.value, runs.c.created_at < _now() - older_than_seconds)
            .order_by(runs.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return [_run_from_row(row) for row in (await connection.execute(query))]

    async def abandon_upload(self, name: str) -> tuple[bool, bool]:
        """An interrupted upload: the run is dropped (`rejected`) and the request it came from,
        if any, is pending again so that it starts afresh. Returns (dropped, request reopened);
        one transaction, so two replicas cannot both do it."""
        async with self._engine.begin() as connection:
            dropped = await connection.execute(
                runs.update()
                .where(runs.c.name == name, runs.c.state == RunState.UPLOADING.value)
                .values(state=RunState.REJECTED.value)
            )
            if dropped.rowcount != 1:
                return False, False
            reopened = await connection.execute(
                run_requests.update()
                .where(run_requests.c.run_name == name)
                .values(state="pending", run_name=None, claim_owner=None, claim_until=0.0)
            )
            return True, reopened.rowcount == 1

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
            for chunk in _in_chunks(wanted):
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
        insert = self._dialect_insert(run_controls)
        async with self._engine.begin() as connection:
            await connection.execute(insert.values(name=name).on_conflict_do_nothing())
            claimed = (await connection.execute(statement)).rowcount == 1
            row = (
                await connection.execute(run_controls.select().where(run_controls.c.name == name))
            ).one()
        return claimed, _controls_from_row(row)

    # -- access: rate limits and the audit trail ---------------------------------------------

    async def runs_started_since(
        self, since: float, *, user_id: str | None = None, channel_id: str | None = None
    ) -> tuple[int, float | None]:
        """How many runs a person or a channel started at or after `since` (epoch seconds), and
        when the oldest of them started: one range of the `runs_by_user`/`_channel` index."""
        query = sa.select(sa.func.count(), sa.func.min(runs.c.created_at)).where(
            runs.c.created_at >= since
        )
        if user_id is not None:
            query = query.where(runs.c.user_id == user_id)
        if channel_id is not None:
            query = query.where(runs.c.channel_id == channel_id)
        async with self._engine.connect() as connection:
            count, oldest = (await connection.execute(query)).one()
        return int(count or 0), oldest

    async def add_audit(self, entry: AuditEntry) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(audit_log.insert().values(**entry.model_dump()))

    async def recent_audit(self, *, target: str | None = None, limit: int = 20) -> list[AuditEntry]:
        """The newest audit entries, of one workflow (or template) or of everything."""
        query = audit_log.select()
        if target is not None:
            query = query.where(audit_log.c.target == target)
        query = query.order_by(audit_log.c.id.desc()).limit(limit)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            AuditEntry(
                at=row.at,
                actor=row.actor,
                channel=row.channel,
                action=row.action,
                target=row.target,
                outcome=row.outcome,
                detail=row.detail or "",
            )
            for row in rows
        ]

    # -- Slack event deduplication ------------------------------------------------------

    # -- requests written down before the ack ------------------------------------------------

    async def add_requests(self, requests: list[StoredRequest]) -> set[str]:
        """Record requests in one transaction; returns the ids that were new (not redeliveries)."""
        if not requests:
            return set()
        now = _now()
        rows = [
            {
                "id": request.id,
                "kind": request.kind,
                "payload": json.dumps(request.payload, sort_keys=True),
                "user_id": request.user_id,
                "channel_id": request.channel_id,
                "state": "pending",
                "attempts": request.attempts,
                "claim_owner": request.claim,
                "claim_until": now + request.lease_seconds,
                "created_at": now,
            }
            for request in requests
        ]
        insert = (
            self._dialect_insert(run_requests).on_conflict_do_nothing().returning(run_requests.c.id)
        )
        if self._sqlite_file is not None:
            # The async engine makes several thread hops per transaction, and in a burst each
            # waits for a turn of a busy event loop: ~100 ms more per ack (BENCHMARKS.md).
            if self._request_writer is None:
                self._request_writer = _SqliteWriter(self._sqlite_file)
            return await self._request_writer.insert(insert, rows)
        async with self._engine.begin() as connection:
            result = await connection.execute(insert, rows)
            return {row[0] for row in result}

    async def finish_request(self, request: RequestClaim, state: str = "done") -> None:
        """A request that ended without a run (refused, answered, handed to a form)."""
        statement = (
            run_requests.update()
            .where(run_requests.c.id == request.id, run_requests.c.state == "pending")
            .values(state=state)
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def claim_stale_requests(
        self, owner: str, lease_seconds: float, limit: int = 20
    ) -> list[StoredRequest]:
        """Take over pending requests whose lease ran out (their replica died): one query when
        there are none; each taken one is claimed with a conditional UPDATE."""
        now = _now()
        query = (
            run_requests.select()
            .where(run_requests.c.state == "pending", run_requests.c.claim_until < now)
            .order_by(run_requests.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            candidates = list(await connection.execute(query))
        claimed = []
        for row in candidates:
            claim = f"{owner}:{row.attempts + 1}"
            statement = (
                run_requests.update()
                .where(
                    run_requests.c.id == row.id,
                    run_requests.c.state == "pending",
                    run_requests.c.claim_until < now,
                )
                .values(
                    claim_owner=claim,
                    claim_until=now + lease_seconds,
                    attempts=row.attempts + 1,
                )
            )
            async with self._engine.begin() as connection:
                if (await connection.execute(statement)).rowcount != 1:
                    continue
            claimed.append(
                StoredRequest(
                    id=row.id,
                    kind=row.kind,
                    payload=json.loads(row.payload),
                    user_id=row.user_id,
                    channel_id=row.channel_id,
                    claim=claim,
                    attempts=row.attempts + 1,
                    lease_seconds=lease_seconds,
                )
            )
        return claimed

    async def request_state(self, request_id: str) -> tuple[str, str | None] | None:
        """(state, run name) of a recorded request, or None."""
        query = sa.select(run_requests.c.state, run_requests.c.run_name).where(
            run_requests.c.id == request_id
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else (row[0], row[1])

    def _dialect_insert(self, table: sa.Table):  # type: ignore[no-untyped-def]
        # Imported here, so a service never loads the other database's dialect (RSS).
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)

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


class RequestSuperseded(Exception):
    """The request was taken over (its lease ran out) or finished by someone else."""


@dataclass(frozen=True)
class RequestClaim:
    """Who works on a recorded request: its id and the claim that attempt holds."""

    id: str
    claim: str


@dataclass(frozen=True)
class StoredRequest(RequestClaim):
    """A request as written before its ack: enough to start it again after a crash."""

    kind: str
    payload: dict[str, Any]
    user_id: str
    channel_id: str
    attempts: int = 1
    lease_seconds: float = 60.0


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


def _in_chunks(wanted: list[str]) -> Iterator[list[str]]:
    """`wanted` in pieces small enough for one `IN (…)` clause each, in its order."""
    for start in range(0, len(wanted), _IN_CLAUSE_CHUNK):
        yield wanted[start : start + _IN_CLAUSE_CHUNK]


class _SqliteWriter:
    """Request batches written to the SQLite file without waiting for a busy event loop.

    Each batch is first tried right on the event loop, through a connection that never
    waits for a lock (busy timeout 0) and never checkpoints the WAL (so a commit makes no
    fsync under `synchronous=NORMAL`): a few hundred rows take a few milliseconds and
    cannot stall the loop. Only when another connection holds the write lock does the batch
    go to a connection of its own thread, which waits for the lock; a thread hop's answer
    waits behind every callback of a burst, tens of milliseconds (BENCHMARKS.md, round 3).
    """

    def __init__(self, path: str) -> None:
        url = f"sqlite:///{path}"
        self._inline = sa.create_engine(
            url, poolclass=sa.pool.StaticPool, connect_args={"timeout": 0}
        )
        sa.event.listen(self._inline, "connect", _sqlite_inline_pragmas)
        self._engine = sa.create_engine(
            url, poolclass=sa.pool.StaticPool, connect_args={"timeout": 30}
        )
        sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request-writer")
        self.waited = 0  # batches that found the write lock taken and went to the thread

    async def insert(self, statement: sa.Insert, rows: list[dict[str, Any]]) -> set[str]:
        def write(engine: sa.Engine) -> set[str]:
            with engine.begin() as connection:
                return {row[0] for row in connection.execute(statement, rows)}

        try:
            return write(self._inline)
        except sa.exc.OperationalError as error:
            if not _is_locked(error):
                raise
        self.waited += 1
        return await asyncio.get_running_loop().run_in_executor(self._thread, write, self._engine)

    async def close(self) -> None:
        self._inline.dispose()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)


def _is_locked(error: sa.exc.OperationalError) -> bool:
    """SQLite's SQLITE_BUSY / SQLITE_LOCKED: another connection is writing."""
    return "locked" in str(error.orig).lower() or "busy" in str(error.orig).lower()


def _sqlite_inline_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """Never wait for a lock and never checkpoint: what a write on the event loop needs."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # already so (the store's engine sets it)
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """WAL lets readers run beside the one writer; busy_timeout waits instead of failing."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
