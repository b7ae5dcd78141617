"""Durable state: which thread each run belongs to, what was announced, which events were seen.

One schema on SQLite (the embedded default) and PostgreSQL (several replicas), in plain SQL
through `bot.database`. Every state change that must happen once is a single conditional
UPDATE, so it is atomic on both backends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.database import Connection, Database, Row, in_list, open_database
from bot.models import AuditEntry, Phase, Run, RunInput, RunState

_IN_CLAUSE_CHUNK = 500

# -- schema ----------------------------------------------------------------------------------

# One CREATE per table, as created by the current release; `{id}` is the audit log's
# self-numbering key, the only column whose type differs between the two databases.
TABLES: dict[str, str] = {
    "runs": """CREATE TABLE IF NOT EXISTS runs (
        name VARCHAR(63) NOT NULL,
        namespace VARCHAR(63) NOT NULL,
        template VARCHAR(253) NOT NULL,
        parameters TEXT NOT NULL,
        user_id VARCHAR(64) NOT NULL,
        channel_id VARCHAR(64) NOT NULL,
        thread_ts VARCHAR(32),
        root_ts VARCHAR(32),
        state VARCHAR(16) NOT NULL,
        phase VARCHAR(16) NOT NULL,
        created_at FLOAT NOT NULL,
        finished_at FLOAT,
        announced_at FLOAT,
        claim_owner VARCHAR(64),
        claim_until FLOAT,
        PRIMARY KEY (name)
    )""",
    "slack_events": """CREATE TABLE IF NOT EXISTS slack_events (
        event_id VARCHAR(128) NOT NULL,
        seen_at FLOAT NOT NULL,
        PRIMARY KEY (event_id)
    )""",
    # Short exclusive jobs shared by replicas (e.g. one poll cycle at a time across them).
    "leases": """CREATE TABLE IF NOT EXISTS leases (
        name VARCHAR(64) NOT NULL,
        owner VARCHAR(64) NOT NULL,
        expires_at FLOAT NOT NULL,
        PRIMARY KEY (name)
    )""",
    # Files from Slack that became a run's input artifacts: where they went, size, SHA-256.
    "run_inputs": """CREATE TABLE IF NOT EXISTS run_inputs (
        run_name VARCHAR(63) NOT NULL,
        artifact VARCHAR(253) NOT NULL,
        position INTEGER NOT NULL,
        file_name TEXT NOT NULL,
        object_key TEXT NOT NULL,
        slack_file_id VARCHAR(32) NOT NULL,
        size BIGINT NOT NULL,
        sha256 VARCHAR(64) NOT NULL,
        PRIMARY KEY (run_name, artifact)
    )""",
    # What people asked for, written before the bot acknowledges them: a replica that dies
    # after the ack leaves the request here, and the poll cycle of any replica finishes it.
    # `run_name` links the run it became; `claim_until` is the lease of whoever works on it.
    "run_requests": """CREATE TABLE IF NOT EXISTS run_requests (
        id VARCHAR(128) NOT NULL,
        kind VARCHAR(16) NOT NULL,
        payload TEXT NOT NULL,
        user_id VARCHAR(64) NOT NULL,
        channel_id VARCHAR(64) NOT NULL,
        state VARCHAR(16) NOT NULL,
        run_name VARCHAR(63),
        attempts INTEGER NOT NULL,
        claim_owner VARCHAR(64),
        claim_until FLOAT NOT NULL,
        created_at FLOAT NOT NULL,
        PRIMARY KEY (id)
    )""",
    # Who did what from Slack or through the exit hook, and how it went: read by
    # `/argo audit [workflow]`. `target` is the workflow when there is one, else the template.
    "audit_log": """CREATE TABLE IF NOT EXISTS audit_log (
        id {id} NOT NULL,
        at FLOAT NOT NULL,
        actor VARCHAR(64),
        channel VARCHAR(64),
        action VARCHAR(16) NOT NULL,
        target VARCHAR(253),
        outcome VARCHAR(16) NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (id)
    )""",
    # What people asked of a run from Slack, one row per run that was ever acted on: the
    # claims that make two clicks one action (stop, resubmit) and the last progress shown.
    "run_controls": """CREATE TABLE IF NOT EXISTS run_controls (
        name VARCHAR(63) NOT NULL,
        shutdown VARCHAR(16),
        shutdown_by VARCHAR(64),
        resubmitted_as VARCHAR(63),
        resubmit_by VARCHAR(64),
        resubmit_until FLOAT,
        progress_shown TEXT,
        progress_at FLOAT,
        PRIMARY KEY (name)
    )""",
    "schema_info": """CREATE TABLE IF NOT EXISTS schema_info (
        version INTEGER NOT NULL,
        applied_at FLOAT NOT NULL,
        PRIMARY KEY (version)
    )""",
}
_ID_TYPE = {"sqlite": "INTEGER", "postgresql": "BIGSERIAL"}  # INTEGER: SQLite's rowid

# Indexes created with their table.
INDEXES: dict[str, str] = {
    "runs_unannounced": "runs (state, created_at)",
    "run_requests_pending": "run_requests (state, claim_until)",
    "audit_log_by_target": "audit_log (target, id)",
}
# Rate limits count a person's or a channel's runs of the last hour: one range each. Added
# to the existing `runs` table by schema step 5.
RATE_LIMIT_INDEXES: dict[str, str] = {
    "runs_by_user": "runs (user_id, created_at)",
    "runs_by_channel": "runs (channel_id, created_at)",
}

# Replicas starting together must not migrate at the same time (PostgreSQL advisory lock key).
_MIGRATION_LOCK_KEY = 0x61726763  # "argc"

_TABLE_EXISTS = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
    "postgresql": "SELECT count(*) FROM information_schema.tables"
    " WHERE table_schema = current_schema() AND table_name = $1",
}
_COLUMNS = {
    "sqlite": "SELECT name FROM pragma_table_info($1)",
    "postgresql": "SELECT column_name AS name FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name = $1",
}


async def _create(connection: Connection, dialect: str, *tables: str) -> None:
    """Tables, and the indexes created with them, that do not exist yet."""
    for table in tables:
        await connection.execute(TABLES[table].format(id=_ID_TYPE[dialect]))
        await _create_indexes(
            connection, {index: on for index, on in INDEXES.items() if on.startswith(f"{table} ")}
        )


async def _create_indexes(connection: Connection, indexes: dict[str, str]) -> None:
    for index, on in indexes.items():
        await connection.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {on}")


async def _create_initial_tables(connection: Connection, dialect: str) -> None:
    await _create(connection, dialect, "runs", "slack_events")


async def _create_leases(connection: Connection, dialect: str) -> None:
    await _create(connection, dialect, "leases")


async def _add_run_inputs(connection: Connection, dialect: str) -> None:
    """Runs started from files: the bot's status message (`root_ts`) and the input files.

    Idempotent: a database created from the current `runs` definition already has the column.
    """
    columns = {row["name"] for row in await connection.fetch(_COLUMNS[dialect], "runs")}
    if "root_ts" not in columns:
        await connection.execute("ALTER TABLE runs ADD COLUMN root_ts VARCHAR(32)")
    await _create(connection, dialect, "run_inputs")


async def _add_run_requests(connection: Connection, dialect: str) -> None:
    await _create(connection, dialect, "run_requests")


async def _add_audit_log(connection: Connection, dialect: str) -> None:
    """The audit trail, and the `runs` indexes that rate limits count with."""
    await _create(connection, dialect, "audit_log")
    await _create_indexes(connection, RATE_LIMIT_INDEXES)


async def _create_the_rest(connection: Connection, dialect: str) -> None:
    """Tables only ever created whole (no step adds them): created when missing."""
    await _create(connection, dialect, *TABLES)
    await _create_indexes(connection, RATE_LIMIT_INDEXES)


# Numbered schema changes, applied in order at start-up; never edit a released step, add one.
# Tables added later may be created by `_create_the_rest`; changes to existing tables (new
# columns, indexes) must be steps here so that existing databases get them.
MIGRATIONS: tuple[Callable[[Connection, str], Awaitable[None]], ...] = (
    _create_initial_tables,
    _create_leases,
    _add_run_inputs,
    _add_run_requests,
    _add_audit_log,
)


def _now() -> float:
    return time.time()


def _to_datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _timestamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


_ANNOUNCE = (
    "UPDATE runs SET state = $1, phase = $2, finished_at = $3, announced_at = $4,"
    " claim_owner = NULL, claim_until = NULL WHERE name = $5 AND claim_owner = $6"
)
_REQUEST_COLUMNS = (
    "id",
    "kind",
    "payload",
    "user_id",
    "channel_id",
    "state",
    "attempts",
    "claim_owner",
    "claim_until",
    "created_at",
)


class Store:
    """The runs table and its friends, on one database (see `bot.database`)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(open_database(url))

    @property
    def dialect(self) -> str:
        return self.database.dialect

    def _in(self, column: str, first: int, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return in_list(self.database.dialect, column, first, values)

    async def migrate(self) -> None:
        """Apply the numbered migrations this database has not seen yet, under a lock."""
        dialect = self.dialect
        async with self.database.transaction() as connection:
            if dialect == "postgresql":
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            await connection.execute(TABLES["schema_info"])
            row = await connection.fetchrow("SELECT max(version) FROM schema_info")
            current = (row[0] if row else None) or 0
            for version, step in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                await step(connection, dialect)
                await connection.execute(
                    "INSERT INTO schema_info (version, applied_at) VALUES ($1, $2)",
                    version,
                    _now(),
                )
            await _create_the_rest(connection, dialect)

    @property
    def latest_schema_version(self) -> int:
        return len(MIGRATIONS)

    async def ping(self) -> None:
        async with self.database.connection() as connection:
            await connection.fetchrow("SELECT 1")

    async def close(self) -> None:
        await self.database.close()

    # -- runs --------------------------------------------------------------------------

    async def add_run(self, run: Run, request: RequestClaim | None = None) -> None:
        """Record a run; with `request`, also mark the request it came from as done.

        Both happen in one transaction, and only while `request` is still held by the one
        starting the run, so a request taken over by another replica becomes one run only.
        """
        async with self.database.transaction() as connection:
            if request is not None:
                linked = await connection.execute(
                    "UPDATE run_requests SET state = 'done', run_name = $1"
                    " WHERE id = $2 AND state = 'pending' AND claim_owner = $3",
                    run.name,
                    request.id,
                    request.claim,
                )
                if linked != 1:
                    raise RequestSuperseded(request.id)
            await connection.execute(
                "INSERT INTO runs (name, namespace, template, parameters, user_id, channel_id,"
                " thread_ts, root_ts, state, phase, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                run.name,
                run.namespace,
                run.template,
                json.dumps(run.parameters, sort_keys=True),
                run.user_id,
                run.channel_id,
                run.thread_ts,
                run.root_ts,
                run.state.value,
                run.phase.value,
                run.created_at.timestamp(),
            )

    async def get_run(self, name: str) -> Run | None:
        async with self.database.connection() as connection:
            row = await connection.fetchrow("SELECT * FROM runs WHERE name = $1", name)
            if row is None:
                return None
            inputs = [
                _input_from_row(item)
                for item in await connection.fetch(
                    "SELECT * FROM run_inputs WHERE run_name = $1 ORDER BY position", name
                )
            ]
        return _run_from_row(row).model_copy(update={"inputs": tuple(inputs)})

    async def run_namespaces(self, names: Iterable[str]) -> dict[str, str]:
        """Name → namespace of the stored runs among `names`: what exit hooks need checked."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, str] = {}
        async with self.database.connection() as connection:
            for chunk in _in_chunks(wanted):
                where, args = self._in("name", 1, chunk)
                rows = await connection.fetch(
                    f"SELECT name, namespace FROM runs WHERE {where}", *args
                )
                found.update((row["name"], row["namespace"]) for row in rows)
        return found

    async def get_runs(self, names: Iterable[str]) -> dict[str, Run]:
        """Several runs with their input files, in two queries per chunk of names."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, Run] = {}
        inputs: dict[str, list[RunInput]] = {}
        async with self.database.connection() as connection:
            for chunk in _in_chunks(wanted):
                where, args = self._in("name", 1, chunk)
                for row in await connection.fetch(f"SELECT * FROM runs WHERE {where}", *args):
                    found[row["name"]] = _run_from_row(row)
                where, args = self._in("run_name", 1, chunk)
                query = f"SELECT * FROM run_inputs WHERE {where} ORDER BY run_name, position"
                for row in await connection.fetch(query, *args):
                    inputs.setdefault(row["run_name"], []).append(_input_from_row(row))
        return {
            name: run.model_copy(update={"inputs": tuple(inputs[name])}) if name in inputs else run
            for name, run in found.items()
        }

    async def add_inputs(self, name: str, inputs: Iterable[RunInput]) -> None:
        """Record the uploaded input files of a run (their size and SHA-256 are known)."""
        rows = [
            (
                name,
                item.artifact,
                position,
                item.file_name,
                item.key,
                item.slack_file_id,
                item.size or 0,
                item.sha256 or "",
            )
            for position, item in enumerate(inputs)
        ]
        if rows:
            async with self.database.transaction() as connection:
                await connection.executemany(
                    "INSERT INTO run_inputs (run_name, artifact, position, file_name, object_key,"
                    " slack_file_id, size, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    rows,
                )

    async def inputs_uploaded(self, name: str) -> bool:
        """`uploading` → `submitting`, restarting the clock: a long upload is not a stale submit."""
        return await self._update_one(
            "UPDATE runs SET state = $1, created_at = $2 WHERE name = $3 AND state = $4",
            RunState.SUBMITTING.value,
            _now(),
            name,
            RunState.UPLOADING.value,
        )

    async def set_state(self, name: str, state: RunState) -> None:
        await self._update_one("UPDATE runs SET state = $1 WHERE name = $2", state.value, name)

    async def waiting_runs(self) -> dict[str, datetime]:
        """Every submitted run not announced yet, with its creation time: one query per cycle."""
        async with self.database.connection() as connection:
            rows = await connection.fetch(
                "SELECT name, created_at FROM runs WHERE state = $1", RunState.RUNNING.value
            )
        return {row["name"]: _to_datetime(row["created_at"]) or datetime.now(UTC) for row in rows}

    async def interrupted_claims(self, names: Iterable[str]) -> set[str]:
        """Which of these runs were claimed by a replica whose claim ran out without being
        given back or finished: it died mid-announcement, maybe after posting."""
        wanted = sorted(set(names))
        found: set[str] = set()
        now = _now()
        async with self.database.connection() as connection:
            for chunk in _in_chunks(wanted):
                where, args = self._in("name", 3, chunk)
                rows = await connection.fetch(
                    "SELECT name FROM runs WHERE state = $1 AND claim_owner IS NOT NULL"
                    f" AND claim_until < $2 AND {where}",
                    RunState.RUNNING.value,
                    now,
                    *args,
                )
                found.update(row["name"] for row in rows)
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
        async with self.database.transaction() as connection:
            for chunk in _in_chunks(wanted):
                where, args = self._in("name", 5, chunk)
                rows = await connection.fetch(
                    "UPDATE runs SET claim_owner = $1, claim_until = $2 WHERE state = $3"
                    f" AND (claim_until IS NULL OR claim_until < $4) AND {where} RETURNING name",
                    owner,
                    now + lease_seconds,
                    RunState.RUNNING.value,
                    now,
                    *args,
                )
                won.update(row["name"] for row in rows)
        return won

    async def mark_announced(
        self, name: str, owner: str, phase: Phase, finished_at: datetime | None
    ) -> bool:
        return await self._update_one(
            _ANNOUNCE,
            RunState.ANNOUNCED.value,
            phase.value,
            _timestamp(finished_at),
            _now(),
            name,
            owner,
        )

    async def mark_many_announced(
        self, marks: Iterable[tuple[str, Phase, datetime | None]], owner: str
    ) -> None:
        """`mark_announced` for several runs (name, phase, finished_at) in one transaction."""
        now = _now()
        rows = [
            (RunState.ANNOUNCED.value, phase.value, _timestamp(finished_at), now, name, owner)
            for name, phase, finished_at in marks
        ]
        if rows:
            async with self.database.transaction() as connection:
                await connection.executemany(_ANNOUNCE, rows)

    async def release_claim(self, name: str, owner: str) -> None:
        await self._update_one(
            "UPDATE runs SET claim_owner = NULL, claim_until = NULL"
            " WHERE name = $1 AND claim_owner = $2",
            name,
            owner,
        )

    async def count_waiting(self) -> int:
        """Runs started and not announced yet (what the poller is still tracking)."""
        async with self.database.connection() as connection:
            row = await connection.fetchrow(
                "SELECT count(*) FROM runs WHERE state = $1", RunState.RUNNING.value
            )
        return int(row[0] if row else 0)

    async def schema_version(self) -> int | None:
        """The recorded schema version, or None when the schema was never created."""
        async with self.database.connection() as connection:
            exists = await connection.fetchrow(_TABLE_EXISTS[self.dialect], "schema_info")
            if not exists or not exists[0]:
                return None
            row = await connection.fetchrow("SELECT max(version) FROM schema_info")
        return None if row is None else row[0]

    async def _update_one(self, sql: str, *args: Any) -> bool:
        """One statement in a transaction of its own; True when it changed exactly one row."""
        async with self.database.transaction() as connection:
            return await connection.execute(sql, *args) == 1

    # -- leases --------------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Hold `name` for `seconds` unless another live owner holds it; renewing is allowed."""
        now = _now()
        async with self.database.transaction() as connection:
            renewed = await connection.execute(
                "UPDATE leases SET owner = $1, expires_at = $2"
                " WHERE name = $3 AND (owner = $1 OR expires_at < $4)",
                owner,
                now + seconds,
                name,
                now,
            )
            if renewed == 1:
                return True
            taken = await connection.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO NOTHING",
                name,
                owner,
                now + seconds,
            )
        return taken == 1

    # -- runs whose start was interrupted ---------------------------------------------------

    async def stale_runs(
        self, state: RunState, older_than_seconds: float, limit: int = 50
    ) -> list[Run]:
        """Runs still `submitting` or `uploading` long after they began: their replica died
        around the create call, or while copying files."""
        return await self._runs(
            "SELECT * FROM runs WHERE state = $1 AND created_at < $2 ORDER BY created_at LIMIT $3",
            state.value,
            _now() - older_than_seconds,
            limit,
        )

    async def _runs(self, sql: str, *args: Any) -> list[Run]:
        async with self.database.connection() as connection:
            return [_run_from_row(row) for row in await connection.fetch(sql, *args)]

    async def abandon_upload(self, name: str) -> tuple[bool, bool]:
        """An interrupted upload: the run is dropped (`rejected`) and the request it came from,
        if any, is pending again so that it starts afresh. Returns (dropped, request reopened);
        one transaction, so two replicas cannot both do it."""
        async with self.database.transaction() as connection:
            dropped = await connection.execute(
                "UPDATE runs SET state = $1 WHERE name = $2 AND state = $3",
                RunState.REJECTED.value,
                name,
                RunState.UPLOADING.value,
            )
            if dropped != 1:
                return False, False
            reopened = await connection.execute(
                "UPDATE run_requests SET state = 'pending', run_name = NULL, claim_owner = NULL,"
                " claim_until = 0.0 WHERE run_name = $1",
                name,
            )
            return True, reopened == 1

    async def settle_submission(self, name: str, state: RunState) -> bool:
        """Move a run out of `submitting` once; False when another replica did it first."""
        return await self._update_one(
            "UPDATE runs SET state = $1 WHERE name = $2 AND state = $3",
            state.value,
            name,
            RunState.SUBMITTING.value,
        )

    # -- lifecycle: lists, retries, stop / resubmit claims, progress ------------------------

    async def recent_runs(
        self, *, channel_id: str | None = None, user_id: str | None = None, limit: int = 50
    ) -> list[Run]:
        """The newest runs that reached Argo, in a channel and/or of a person."""
        conditions, args = ["state <> $1"], [RunState.REJECTED.value]
        for column, value in (("channel_id", channel_id), ("user_id", user_id)):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        args.append(limit)
        return await self._runs(
            f"SELECT * FROM runs WHERE {' AND '.join(conditions)}"
            f" ORDER BY created_at DESC LIMIT ${len(args)}",
            *args,
        )

    async def running_runs(self, limit: int = 500) -> list[Run]:
        """Runs Argo has and nobody announced yet, oldest first (what progress refreshes)."""
        return await self._runs(
            "SELECT * FROM runs WHERE state = $1 ORDER BY created_at LIMIT $2",
            RunState.RUNNING.value,
            limit,
        )

    async def begin_retry(self, name: str, owner: str, lease_seconds: float) -> bool:
        """Claim the retry of a run announced as failed; two clicks, one winner.

        The claim is a lease on the run (state `retrying`): if its holder dies before Argo
        answers, the run can be retried again once the lease runs out.
        """
        now = _now()
        return await self._update_one(
            "UPDATE runs SET state = $1, claim_owner = $2, claim_until = $3 WHERE name = $4"
            " AND ((state = $5 AND phase IN ($6, $7)) OR (state = $1 AND claim_until < $8))",
            RunState.RETRYING.value,
            owner,
            now + lease_seconds,
            name,
            RunState.ANNOUNCED.value,
            Phase.FAILED.value,
            Phase.ERROR.value,
            now,
        )

    async def end_retry(self, name: str, owner: str, *, retried: bool) -> None:
        """Argo answered: the run is running again (announced anew at its end), or it is not."""
        claimed = "WHERE name = $1 AND state = $2 AND claim_owner = $3"
        async with self.database.transaction() as connection:
            if not retried:
                await connection.execute(
                    f"UPDATE runs SET state = $4, claim_owner = NULL, claim_until = NULL {claimed}",
                    name,
                    RunState.RETRYING.value,
                    owner,
                    RunState.ANNOUNCED.value,
                )
                return
            await connection.execute(
                "UPDATE runs SET state = $4, phase = $5, finished_at = NULL, announced_at = NULL,"
                f" claim_owner = NULL, claim_until = NULL {claimed}",
                name,
                RunState.RETRYING.value,
                owner,
                RunState.RUNNING.value,
                Phase.RUNNING.value,
            )
            await connection.execute(
                "UPDATE run_controls SET shutdown = NULL, shutdown_by = NULL WHERE name = $1", name
            )

    async def stale_retries(self) -> list[Run]:
        """Retries whose replica died between claiming them and hearing from Argo."""
        return await self._runs(
            "SELECT * FROM runs WHERE state = $1 AND claim_until < $2",
            RunState.RETRYING.value,
            _now(),
        )

    async def settle_retry(self, name: str, *, retried: bool) -> bool:
        """Finish a stale retry claim the way Argo says it went; False if someone else did."""
        settled = "claim_owner = NULL, claim_until = NULL WHERE name = $1 AND state = $2"
        if retried:
            return await self._update_one(
                "UPDATE runs SET state = $4, phase = $5, finished_at = NULL, announced_at = NULL,"
                f" {settled} AND claim_until < $3",
                name,
                RunState.RETRYING.value,
                _now(),
                RunState.RUNNING.value,
                Phase.RUNNING.value,
            )
        return await self._update_one(
            f"UPDATE runs SET state = $4, {settled} AND claim_until < $3",
            name,
            RunState.RETRYING.value,
            _now(),
            RunState.ANNOUNCED.value,
        )

    async def controls(self, names: Iterable[str]) -> dict[str, RunControls]:
        wanted = list(dict.fromkeys(names))
        found: dict[str, RunControls] = {}
        async with self.database.connection() as connection:
            for chunk in _in_chunks(wanted):
                where, args = self._in("name", 1, chunk)
                for row in await connection.fetch(
                    f"SELECT * FROM run_controls WHERE {where}", *args
                ):
                    found[row["name"]] = _controls_from_row(row)
        return found

    async def claim_shutdown(
        self, name: str, strategy: str, user_id: str
    ) -> tuple[bool, RunControls]:
        """Record a stop or terminate request unless one is already in (terminate may follow
        a stop); False and what was asked before when it is a repeat."""
        earlier = "stop" if strategy == "terminate" else None  # `= NULL` is never true
        return await self._claim_control(
            name,
            "UPDATE run_controls SET shutdown = $2, shutdown_by = $3"
            " WHERE name = $1 AND (shutdown IS NULL OR shutdown = $4)",
            strategy,
            user_id,
            earlier,
        )

    async def release_shutdown(self, name: str, strategy: str, previous: RunControls) -> None:
        """Argo refused the request: put back what was recorded before it."""
        await self._update_one(
            "UPDATE run_controls SET shutdown = $1, shutdown_by = $2"
            " WHERE name = $3 AND shutdown = $4",
            previous.shutdown,
            previous.shutdown_by,
            name,
            strategy,
        )

    async def claim_resubmit(
        self, name: str, user_id: str, lease_seconds: float
    ) -> tuple[bool, RunControls]:
        """Take the one resubmission of a run; False and the earlier one when it is a repeat."""
        now = _now()
        return await self._claim_control(
            name,
            "UPDATE run_controls SET resubmit_by = $2, resubmit_until = $3 WHERE name = $1"
            " AND resubmitted_as IS NULL AND (resubmit_until IS NULL OR resubmit_until < $4)",
            user_id,
            now + lease_seconds,
            now,
        )

    async def end_resubmit(self, name: str, new_name: str | None) -> None:
        """The resubmission started `new_name`, or (None) it failed and may be tried again."""
        if new_name is None:
            await self._update_one(
                "UPDATE run_controls SET resubmit_until = NULL, resubmitted_as = NULL,"
                " resubmit_by = NULL WHERE name = $1",
                name,
            )
            return
        await self._update_one(
            "UPDATE run_controls SET resubmit_until = NULL, resubmitted_as = $2 WHERE name = $1",
            name,
            new_name,
        )

    async def claim_progress(
        self, name: str, shown: str, *, min_gap: float, refresh_gap: float
    ) -> bool:
        """May this replica edit the run's thread root now? At most once per `min_gap`, and
        only when what it shows changed (or `refresh_gap` passed: the elapsed time moved)."""
        now = _now()
        claimed, _ = await self._claim_control(
            name,
            "UPDATE run_controls SET progress_shown = $2, progress_at = $3 WHERE name = $1"
            " AND (progress_at IS NULL OR (progress_at <= $4 AND (progress_shown IS NULL"
            " OR progress_shown <> $2 OR progress_at <= $5)))",
            shown,
            now,
            now - min_gap,
            now - refresh_gap,
        )
        return claimed

    async def _claim_control(self, name: str, update: str, *args: Any) -> tuple[bool, RunControls]:
        """One conditional UPDATE (`name` is its `$1`) on the run's controls row, created when
        missing; whether it took, and the row after it."""
        async with self.database.transaction() as connection:
            await connection.execute(
                "INSERT INTO run_controls (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name
            )
            claimed = await connection.execute(update, name, *args) == 1
            row = await connection.fetchrow("SELECT * FROM run_controls WHERE name = $1", name)
        return claimed, _controls_from_row(row)

    # -- access: rate limits and the audit trail ---------------------------------------------

    async def runs_started_since(
        self, since: float, *, user_id: str | None = None, channel_id: str | None = None
    ) -> tuple[int, float | None]:
        """How many runs a person or a channel started at or after `since` (epoch seconds), and
        when the oldest of them started: one range of the `runs_by_user`/`_channel` index."""
        conditions, args = ["created_at >= $1"], [since]
        for column, value in (("user_id", user_id), ("channel_id", channel_id)):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        async with self.database.connection() as connection:
            row = await connection.fetchrow(
                f"SELECT count(*), min(created_at) FROM runs WHERE {' AND '.join(conditions)}",
                *args,
            )
        return (0, None) if row is None else (int(row[0] or 0), row[1])

    async def add_audit(self, entry: AuditEntry) -> None:
        async with self.database.transaction() as connection:
            await connection.execute(
                "INSERT INTO audit_log (at, actor, channel, action, target, outcome, detail)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                entry.at,
                entry.actor,
                entry.channel,
                entry.action,
                entry.target,
                entry.outcome,
                entry.detail,
            )

    async def recent_audit(self, *, target: str | None = None, limit: int = 20) -> list[AuditEntry]:
        """The newest audit entries, of one workflow (or template) or of everything."""
        columns = "at, actor, channel, action, target, outcome, detail"
        async with self.database.connection() as connection:
            if target is None:
                rows = await connection.fetch(
                    f"SELECT {columns} FROM audit_log ORDER BY id DESC LIMIT $1", limit
                )
            else:
                rows = await connection.fetch(
                    f"SELECT {columns} FROM audit_log WHERE target = $1 ORDER BY id DESC LIMIT $2",
                    target,
                    limit,
                )
        return [
            AuditEntry(
                at=row["at"],
                actor=row["actor"],
                channel=row["channel"],
                action=row["action"],
                target=row["target"],
                outcome=row["outcome"],
                detail=row["detail"] or "",
            )
            for row in rows
        ]

    # -- requests written down before the ack ------------------------------------------------

    async def add_requests(self, requests: list[StoredRequest]) -> set[str]:
        """Record requests; returns the ids that were new (not redeliveries).

        Written with `insert_now`: on SQLite right from the event loop, not after a burst's
        callbacks (BENCHMARKS.md, round 3).
        """
        now = _now()
        return await self.database.insert_now(
            "run_requests",
            _REQUEST_COLUMNS,
            [
                (
                    request.id,
                    request.kind,
                    json.dumps(request.payload, sort_keys=True),
                    request.user_id,
                    request.channel_id,
                    "pending",
                    request.attempts,
                    request.claim,
                    now + request.lease_seconds,
                    now,
                )
                for request in requests
            ],
        )

    async def finish_request(self, request: RequestClaim, state: str = "done") -> None:
        """A request that ended without a run (refused, answered, handed to a form)."""
        await self._update_one(
            "UPDATE run_requests SET state = $1 WHERE id = $2 AND state = 'pending'",
            state,
            request.id,
        )

    async def claim_stale_requests(
        self, owner: str, lease_seconds: float, limit: int = 20
    ) -> list[StoredRequest]:
        """Take over pending requests whose lease ran out (their replica died): one query when
        there are none; each taken one is claimed with a conditional UPDATE."""
        now = _now()
        async with self.database.connection() as connection:
            candidates = await connection.fetch(
                "SELECT * FROM run_requests WHERE state = 'pending' AND claim_until < $1"
                " ORDER BY created_at LIMIT $2",
                now,
                limit,
            )
        claimed = []
        for row in candidates:
            attempts = row["attempts"] + 1
            claim = f"{owner}:{attempts}"
            taken = await self._update_one(
                "UPDATE run_requests SET claim_owner = $1, claim_until = $2, attempts = $3"
                " WHERE id = $4 AND state = 'pending' AND claim_until < $5",
                claim,
                now + lease_seconds,
                attempts,
                row["id"],
                now,
            )
            if not taken:
                continue
            claimed.append(
                StoredRequest(
                    id=row["id"],
                    kind=row["kind"],
                    payload=json.loads(row["payload"]),
                    user_id=row["user_id"],
                    channel_id=row["channel_id"],
                    claim=claim,
                    attempts=attempts,
                    lease_seconds=lease_seconds,
                )
            )
        return claimed

    async def request_state(self, request_id: str) -> tuple[str, str | None] | None:
        """(state, run name) of a recorded request, or None."""
        async with self.database.connection() as connection:
            row = await connection.fetchrow(
                "SELECT state, run_name FROM run_requests WHERE id = $1", request_id
            )
        return None if row is None else (row["state"], row["run_name"])

    # -- Slack event deduplication ------------------------------------------------------

    async def remember_event(self, event_id: str) -> bool:
        """Record a Slack event id; False when it was seen before (a Slack retry)."""
        async with self.database.transaction() as connection:
            added = await connection.execute(
                "INSERT INTO slack_events (event_id, seen_at) VALUES ($1, $2)"
                " ON CONFLICT (event_id) DO NOTHING",
                event_id,
                _now(),
            )
        return added == 1


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


def _controls_from_row(row: Row) -> RunControls:
    return RunControls(
        shutdown=row["shutdown"],
        shutdown_by=row["shutdown_by"],
        resubmitted_as=row["resubmitted_as"],
        resubmit_by=row["resubmit_by"],
        progress_shown=row["progress_shown"],
        progress_at=row["progress_at"],
    )


def _run_from_row(row: Row) -> Run:
    return Run(
        name=row["name"],
        namespace=row["namespace"],
        template=row["template"],
        parameters=json.loads(row["parameters"] or "{}"),
        user_id=row["user_id"],
        channel_id=row["channel_id"],
        thread_ts=row["thread_ts"],
        root_ts=row["root_ts"],
        state=RunState(row["state"]),
        phase=Phase.parse(row["phase"]),
        created_at=_to_datetime(row["created_at"]) or datetime.now(UTC),
        finished_at=_to_datetime(row["finished_at"]),
        announced_at=_to_datetime(row["announced_at"]),
    )


def _input_from_row(row: Row) -> RunInput:
    return RunInput(
        artifact=row["artifact"],
        file_name=row["file_name"],
        key=row["object_key"],
        slack_file_id=row["slack_file_id"],
        size=row["size"],
        sha256=row["sha256"],
    )


def _in_chunks(wanted: list[str]) -> Iterator[list[str]]:
    """`wanted` in pieces small enough for one `IN (…)` clause each, in its order."""
    for start in range(0, len(wanted), _IN_CLAUSE_CHUNK):
        yield wanted[start : start + _IN_CLAUSE_CHUNK]
