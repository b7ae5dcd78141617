"""The run form's edges: open it for `/argo run <template that takes files>`, take submissions.

A submission answers within Slack's 3 s: invalid fields come back as errors under those
fields (the form stays open), a valid one closes the form and the run starts in the
background like a slash command's, with its thread root in the channel the command came from.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.inputs import RunInputs
from bot.journal import NOT_RECORDED
from bot.messages import code
from bot.modals import (
    CALLBACK_ID,
    FormContext,
    FormError,
    files_in_declared_order,
    read_submission,
    run_form,
    submission_errors,
)
from bot.models import RunRequest, SlackOrigin
from bot.runs import RunService, UserError
from bot.slack import SlackError, SlackMessenger

logger = logging.getLogger(__name__)

# Records the request and starts it in the background; False when it could not be recorded.
StartRun = Callable[[RunRequest, RunInputs], Awaitable[bool]]


class RunFormHandler:
    def __init__(self, *, runs: RunService, slack: SlackMessenger, max_upload_bytes: int) -> None:
        self._runs = runs
        self._slack = slack
        self._max_bytes = max_upload_bytes
        self._start: StartRun | None = None

    def register(self, bolt: AsyncApp, *, start: StartRun) -> None:
        """`start` runs a request in the background and tells the person how it went."""
        self._start = start
        bolt.view(CALLBACK_ID)(self.on_submit)

    async def offer(self, request: RunRequest, trigger_id: str) -> bool:
        """Open the form when the template takes files (a slash command cannot carry any)."""
        template = await self._runs.template(request.template)
        if not template.input_artifacts:
            return False
        # A person the policy turns away is told now, not after choosing files.
        await self._runs.authorize(template, request.origin)
        unknown = [name for name in request.parameters if template.parameter(name) is None]
        if unknown:
            takes = ", ".join(code(p.name) for p in template.parameters) or "no parameters"
            raise UserError(
                f"{code(unknown[0])} is not a parameter of {code(template.name)} (it takes "
                f"{takes}). The files come in the form that opens."
            )
        origin = request.origin
        context = FormContext(
            template=template.name, channel_id=origin.channel_id, response_url=origin.response_url
        )
        try:
            view = run_form(template, request.parameters, context)
            await self._slack.open_view(trigger_id, view)
        except FormError as error:
            raise UserError(str(error)) from error
        except SlackError as error:
            raise UserError(
                f"I could not open the form for {code(template.name)} ({error}). "
                "Try the command again."
            ) from error
        return True

    async def on_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            submission = read_submission(view)
        except ValueError:
            logger.warning("a run form came back without its context; closing it")
            await ack()
            return
        try:
            template = await self._runs.template(submission.context.template)
        except UserError as error:
            first = next(iter((view.get("state") or {}).get("values") or {}), "")
            await ack(response_action="errors", errors={first: str(error).replace("`", "")})
            return
        errors = submission_errors(template, submission, max_bytes=self._max_bytes)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        user = body.get("user") or {}
        origin = SlackOrigin(
            user_id=str(user.get("id", "")),
            channel_id=submission.context.channel_id,
            team_id=(body.get("team") or {}).get("id"),
            response_url=submission.context.response_url,
        )
        request = RunRequest(
            template=template.name, parameters=submission.parameters, origin=origin
        )
        assert self._start is not None, "register() first"
        inputs = RunInputs(files=files_in_declared_order(template, submission))
        if not await self._start(request, inputs):
            first = next(iter((view.get("state") or {}).get("values") or {}), "")
            await ack(response_action="errors", errors={first: NOT_RECORDED.replace("`", "")})
            return
        await ack()
