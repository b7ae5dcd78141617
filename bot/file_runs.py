"""Runs started by files people share: a mention with files, or a plain drop in a drop zone.

Slack may deliver one upload twice (as `app_mention` and as `message`/`file_share`) and
re-sends events it thinks were lost; both share the message's channel and `ts`, so claiming
that pair once in the store starts exactly one run per upload, across restarts and replicas.
The run lives in the thread of the person's message; refusals are answered there too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bot.audit import Audit, outcome_of
from bot.commands import CommandError, HelpCommand, RunCommand, parse_command
from bot.inputs import RunInputs
from bot.journal import RequestJournal
from bot.messages import SlackMessage, code, command_error
from bot.models import RunRequest, SlackOrigin
from bot.routes import DropZones
from bot.runs import RunService, TryLater, UserError
from bot.slack import SlackError, SlackMessenger
from bot.slack_files import SlackFile
from bot.store import RequestClaim, RequestSuperseded, Store, StoredRequest
from bot.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

MESSAGE_REQUEST = "message"

MENTION_HELP = (
    "Mention me with `run <template> [name=value ...]` and attach the files the template "
    'takes, e.g. `run summarize-csv title="Weekly"` with a CSV. Several inputs: say which '
    "file is which with `<input>=<file name>`. The result arrives in this thread."
)


@dataclass(frozen=True)
class SharedMessage:
    """A person's message that may start a run, translated from its Slack event."""

    channel_id: str
    user_id: str
    ts: str
    text: str  # with the bot's own mention removed
    mentions_bot: bool
    files: tuple[SlackFile, ...] = ()
    thread_ts: str | None = None
    team_id: str | None = None

    @property
    def thread(self) -> str:
        """Slack threads hang off top-level messages only."""
        return self.thread_ts or self.ts

    @property
    def delivery_key(self) -> str:
        return f"message:{self.channel_id}:{self.ts}"

    def to_payload(self) -> dict[str, Any]:
        """As written into the request journal (see bot/journal.py)."""
        fields = {key: getattr(self, key) for key in self.__dataclass_fields__ if key != "files"}
        return {**fields, "files": [file.model_dump(mode="json") for file in self.files]}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SharedMessage:
        files = tuple(SlackFile.model_validate(file) for file in payload.get("files", ()))
        return cls(**{**payload, "files": files})


@dataclass(frozen=True)
class _Intent:
    template: str | None = None  # None: only answer with `reply`
    parameters: dict[str, str] = field(default_factory=dict)
    allowed_types: frozenset[str] = frozenset()
    reply: str | None = None


class FileRunService:
    def __init__(
        self,
        *,
        runs: RunService,
        slack: SlackMessenger,
        store: Store,
        tasks: BackgroundTasks,
        drop_zones: DropZones,
        journal: RequestJournal,
        audit: Audit | None = None,
    ) -> None:
        self._audit = audit
        self._journal = journal
        journal.on_resume(MESSAGE_REQUEST, self.resume)
        self._runs = runs
        self._slack = slack
        self._store = store
        self._tasks = tasks
        self._zones = drop_zones

    async def accept(self, message: SharedMessage) -> bool:
        """Act on a message at most once; returns quickly (the work runs in the background)."""
        intent = self._intent(message)
        if intent is None:
            return False
        claim: StoredRequest | None = None
        if intent.template is None:
            first = await self._store.remember_event(message.delivery_key)
        else:
            # Written down before Slack's event is acknowledged; the message's key makes a
            # second delivery of the same upload a duplicate here. If the database cannot
            # take it, the error makes Slack deliver the event again later.
            claim = await self._journal.record(
                MESSAGE_REQUEST,
                message.to_payload(),
                user_id=message.user_id,
                channel_id=message.channel_id,
                request_id=message.delivery_key,
            )
            first = claim is not None
        if not first:
            logger.info("already handled %s (second delivery or retry)", message.delivery_key)
            return False
        self._tasks.spawn(
            self._act(message, intent, claim), name=f"file-run:{message.delivery_key}"
        )
        return True

    async def resume(self, stored: StoredRequest) -> None:
        """A recorded upload whose replica died before it became a run: start it now."""
        message = SharedMessage.from_payload(stored.payload)
        intent = self._intent(message)
        if intent is None or intent.template is None:
            await self._journal.finish(stored)
            return
        await self._act(message, intent, stored)

    def _intent(self, message: SharedMessage) -> _Intent | None:
        zone = self._zones.for_channel(message.channel_id)
        if message.mentions_bot:
            try:
                parsed = parse_command(message.text)
            except CommandError as error:
                return _Intent(reply=command_error(str(error)))
            if isinstance(parsed, RunCommand):
                return _Intent(template=parsed.template, parameters=parsed.parameters)
            unknown_verb = parsed.unknown_verb if isinstance(parsed, HelpCommand) else None
            if zone is not None and message.files and not unknown_verb:
                return _Intent(zone.template, dict(zone.parameters), zone.file_types)
            if not isinstance(parsed, HelpCommand):
                # Other verbs (status, logs, stop...) are the slash command's; say so.
                return _Intent(reply=MENTION_HELP)
            prefix = f"I don't know {code(unknown_verb[:40])}. " if unknown_verb else ""
            return _Intent(reply=prefix + MENTION_HELP)
        if zone is not None and message.files:
            overrides = _assignments(message.text, zone.template)
            return _Intent(zone.template, {**zone.parameters, **overrides}, zone.file_types)
        return None

    async def _act(
        self, message: SharedMessage, intent: _Intent, claim: RequestClaim | None = None
    ) -> None:
        if intent.template is None:
            await self._reply(message, intent.reply or MENTION_HELP)
            return
        request = RunRequest(
            template=intent.template,
            parameters=intent.parameters,
            origin=SlackOrigin(
                user_id=message.user_id, channel_id=message.channel_id, team_id=message.team_id
            ),
        )
        try:
            inputs = RunInputs(
                files=await self._complete(message.files),
                thread_ts=message.thread,
                allowed_types=intent.allowed_types,
            )
            run = await self._runs.start_run(request, inputs, claim=claim)
        except RequestSuperseded:
            logger.info("another replica took over %s", message.delivery_key)
        except TryLater as error:
            logger.warning("%s; its request will be tried again", error)
        except UserError as error:
            self._record(message, intent.template, error)
            await self._journal.finish(claim)
            await self._reply(message, command_error(str(error)))
        except Exception as error:
            self._record(message, intent.template, error)
            await self._journal.finish(claim, "failed")
            logger.exception("starting %s from a file share failed", intent.template)
            await self._reply(
                message,
                command_error(
                    f"Something went wrong while starting {code(intent.template)}; nothing was "
                    "started. The bot's logs have the details."
                ),
            )
        else:
            self._record(message, run.name, None, detail=f"run {intent.template}")

    def _record(
        self, message: SharedMessage, target: str, error: Exception | None, detail: str = ""
    ) -> None:
        """The audit entry of a file-started run: the workflow it became, or why not."""
        if self._audit is None:
            return
        self._audit.record(
            "file",
            outcome_of(error),
            actor=message.user_id,
            channel=message.channel_id,
            target=target,
            detail=str(error) if error is not None else detail,
        )

    async def _complete(self, files: tuple[SlackFile, ...]) -> tuple[SlackFile, ...]:
        """Slack Connect shares carry no URLs: ask files.info for the full object."""
        complete = []
        for file in files:
            if file.needs_lookup:
                try:
                    file = SlackFile.from_api(await self._slack.file_info(file.id))
                except SlackError as error:
                    raise UserError(
                        f"I cannot see the file {code(file.name)} ({error})."
                    ) from error
            complete.append(file)
        return tuple(complete)

    async def _reply(self, message: SharedMessage, text: str) -> None:
        note = SlackMessage(text=f"<@{message.user_id}> {text}", blocks=[])
        try:
            await self._slack.post(message.channel_id, note, thread_ts=message.thread)
        except SlackError:
            logger.warning("could not answer in the thread of %s", message.ts, exc_info=True)


def _assignments(text: str, template: str) -> dict[str, str]:
    """`name=value` words in a drop's text override the zone's defaults; other text is a comment."""
    if not text.strip():
        return {}
    try:
        parsed = parse_command(f"run {template} {text}")
    except CommandError:
        return {}
    return parsed.parameters if isinstance(parsed, RunCommand) else {}
