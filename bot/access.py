"""Enforcing the access policy at the doors that change something: starting and controlling runs.

One `Access` is built by the app factory from `POLICY_FILE` and handed to the run and
lifecycle services. A denial is an `AccessDenied` (a `UserError`), worded for the person who
asked, raised before anything reaches Slack threads, S3 or Argo.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from bot.messages import code
from bot.models import Run, RunAction, SlackOrigin
from bot.policy import Policy
from bot.runs import UserError
from bot.store import Store

logger = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 3600.0
_SHOWN_ADMINS = 3


class AccessDenied(UserError):
    """The policy does not allow it; `reason` names the rule (for the audit trail)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Access:
    """The policy, plus what it needs to count: the store (rate limits) and a clock."""

    def __init__(
        self, *, policy: Policy, store: Store, clock: Callable[[], float] = time.time
    ) -> None:
        self.policy = policy
        self._store = store
        self._clock = clock

    def is_admin(self, user_id: str) -> bool:
        return self.policy.is_admin(user_id)

    def may_run(self, template: str, origin: SlackOrigin) -> bool:
        """The template's rules (user, channel) allow it; rate limits are not looked at."""
        return self._rule_denial(template, origin) is None

    async def check_run(self, template: str, origin: SlackOrigin) -> None:
        """AccessDenied unless this person may start `template` in this channel right now."""
        denial = self._rule_denial(template, origin)
        if denial is None:
            denial = await self._rate_denial(origin)
        if denial is not None:
            logger.info(
                "run denied",
                extra={"template": template, "user": origin.user_id, "reason": denial.reason},
            )
            raise denial

    def check_control(self, run: Run, action: RunAction, origin: SlackOrigin) -> None:
        """Only the person who started a run, admins and `control_others` may change it."""
        if run.user_id == origin.user_id or self.policy.may_control_others(origin.user_id):
            return
        verb = action.value
        raise AccessDenied(
            f"You may not {verb} {code(run.name)}: <@{run.user_id}> started it, and only they, "
            f"an admin or someone the access policy allows may {verb} it. {self._ask_admin()}",
            reason="not-owner",
        )

    def check_audit(self, origin: SlackOrigin) -> None:
        if self.policy.is_admin(origin.user_id):
            return
        raise AccessDenied(
            "Only admins named in the access policy (`admins` in `POLICY_FILE`) may read the "
            "audit trail.",
            reason="not-admin",
        )

    # -- rules ---------------------------------------------------------------------------

    def _rule_denial(self, template: str, origin: SlackOrigin) -> AccessDenied | None:
        if self.policy.is_admin(origin.user_id):
            return None
        rule = self.policy.rule_for(template)
        if rule is None:
            return None
        if rule.users is not None and origin.user_id not in self.policy.members(rule.users):
            return AccessDenied(
                f"You may not run {code(template)}. {self._ask_admin()}", reason="user"
            )
        if rule.channels is not None and origin.channel_id not in rule.channels:
            where = ", ".join(f"<#{channel}>" for channel in rule.channels)
            elsewhere = f"It may be run in {where}. " if where else ""
            return AccessDenied(
                f"You may not run {code(template)} in this channel. {elsewhere}{self._ask_admin()}",
                reason="channel",
            )
        return None

    async def _rate_denial(self, origin: SlackOrigin) -> AccessDenied | None:
        """Runs of the last hour, counted in the store (so every replica sees the same)."""
        limits = self.policy.rate_limits
        now = self._clock()
        since = now - RATE_WINDOW_SECONDS
        checks = (
            (limits.runs_per_user_per_hour, "user", "You have", "per person"),
            (limits.runs_per_channel_per_hour, "channel", "This channel has", "per channel"),
        )
        for limit, scope, who, per in checks:
            if limit is None:
                continue
            if scope == "user":
                count, oldest = await self._store.runs_started_since(since, user_id=origin.user_id)
            else:
                count, oldest = await self._store.runs_started_since(
                    since, channel_id=origin.channel_id
                )
            if count >= limit:
                free_at = (oldest if oldest is not None else now) + RATE_WINDOW_SECONDS
                return AccessDenied(
                    f"{who} started {_runs(count)} in the last hour, the most allowed {per}. "
                    f"Nothing was started; try again in {_minutes(free_at - now)}.",
                    reason=f"rate-{scope}",
                )
        return None

    def _ask_admin(self) -> str:
        admins = self.policy.admin_ids()
        if not admins:
            return "Ask whoever runs this bot if you need to."
        names = ", ".join(f"<@{admin}>" for admin in admins[:_SHOWN_ADMINS])
        return f"Ask an admin ({names}) if you need to."


def _runs(count: int) -> str:
    return "1 run" if count == 1 else f"{count} runs"


def _minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
