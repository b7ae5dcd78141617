"""Who may run which template where, and who may control other people's runs.

Read once at start-up from `POLICY_FILE` (YAML) and validated then, so a typo stops the
service with one clear line instead of letting the wrong people in (or keeping everyone out):

    admins: [U0ADMIN]                  # may do anything, and read the audit trail
    groups:                            # named groups of Slack user IDs
      data-team: [U01, U02]
    templates:
      csv-summary:
        channels: [C0DATA]             # omitted: any channel
        users: [U03, "group:data-team"]  # omitted: anyone; []: nobody but admins
      "*":                             # every template not listed above
        users: ["group:data-team"]
    control_others: ["group:data-team"]  # may stop, retry, resubmit runs others started
    rate_limits:                       # runs started in the last hour; null: no limit
      runs_per_user_per_hour: 30
      runs_per_channel_per_hour: 100

Without a file (`Policy()`): anyone may run every enabled template in any channel the bot is
in, people control only their own runs, there are no admins, and a person may start at most
`DEFAULT_RUNS_PER_USER_PER_HOUR` runs an hour.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.commands import TEMPLATE_NAME
from bot.routes import read_yaml_file

DEFAULT_RUNS_PER_USER_PER_HOUR = 60
ANY_TEMPLATE = "*"
GROUP_PREFIX = "group:"

_USER_ID = r"^[UW][A-Z0-9]{1,20}$"
_CHANNEL_ID = r"^[CGD][A-Z0-9]{1,20}$"
_GROUP_NAME = r"[a-z0-9][a-z0-9_.-]{0,62}"
_PRINCIPAL = rf"^([UW][A-Z0-9]{{1,20}}|{GROUP_PREFIX}{_GROUP_NAME})$"
_TEMPLATE_KEY = rf"^(\*|{TEMPLATE_NAME.pattern[1:-1]})$"

UserId = Annotated[str, Field(pattern=_USER_ID)]
ChannelId = Annotated[str, Field(pattern=_CHANNEL_ID)]
GroupName = Annotated[str, Field(pattern=rf"^{_GROUP_NAME}$")]
Principal = Annotated[str, Field(pattern=_PRINCIPAL)]  # a user ID or `group:<name>`
TemplateKey = Annotated[str, Field(pattern=_TEMPLATE_KEY, max_length=253)]
RunsPerHour = Annotated[int, Field(ge=1, le=1_000_000)]


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and the problem."""


class TemplateRule(BaseModel):
    """Where, and by whom, one template (or every unlisted one) may be run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: tuple[ChannelId, ...] | None = None  # None: any channel
    users: tuple[Principal, ...] | None = None  # None: anyone


class RateLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    runs_per_user_per_hour: RunsPerHour | None = DEFAULT_RUNS_PER_USER_PER_HOUR
    runs_per_channel_per_hour: RunsPerHour | None = None


class Policy(BaseModel):
    """The access policy as written in the file; pure lookups, no I/O."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    admins: tuple[Principal, ...] = ()
    groups: dict[GroupName, tuple[UserId, ...]] = Field(default_factory=dict)
    templates: dict[TemplateKey, TemplateRule] = Field(default_factory=dict)
    control_others: tuple[Principal, ...] = ()
    rate_limits: RateLimits = RateLimits()

    @model_validator(mode="after")
    def _groups_are_defined(self) -> Policy:
        """`group:x` must name a group of this file: a typo would silently match nobody."""
        lists: list[tuple[str, Iterable[str]]] = [
            ("admins", self.admins),
            ("control_others", self.control_others),
        ]
        lists += [
            (f"templates.{name}.users", rule.users or ()) for name, rule in self.templates.items()
        ]
        for where, principals in lists:
            for principal in principals:
                group = principal.removeprefix(GROUP_PREFIX)
                if principal.startswith(GROUP_PREFIX) and group not in self.groups:
                    raise ValueError(f"{where} names {principal!r}, which is not under groups")
        return self

    def members(self, principals: Iterable[str]) -> frozenset[str]:
        """The user IDs the principals stand for (groups expanded)."""
        found: set[str] = set()
        for principal in principals:
            if principal.startswith(GROUP_PREFIX):
                found.update(self.groups.get(principal.removeprefix(GROUP_PREFIX), ()))
            else:
                found.add(principal)
        return frozenset(found)

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.members(self.admins)

    def may_control_others(self, user_id: str) -> bool:
        return self.is_admin(user_id) or user_id in self.members(self.control_others)

    def rule_for(self, template: str) -> TemplateRule | None:
        """The template's own rule, else the `*` rule, else None (no restriction)."""
        if template in self.templates:
            return self.templates[template]
        return self.templates.get(ANY_TEMPLATE)

    def admin_ids(self) -> list[str]:
        return sorted(self.members(self.admins))


def load_policy(path: Path | None) -> Policy:
    """Parse and validate the policy file; PolicyError names what is wrong and where."""
    if path is None:
        return Policy()
    document = read_yaml_file(path, PolicyError)
    if document is None:
        return Policy()
    if not isinstance(document, dict):
        raise PolicyError(f"{path}: the top level must be a mapping (admins, groups, templates…)")
    try:
        return Policy.model_validate(document)
    except ValidationError as error:
        raise PolicyError(f"{path}: {_first_problem(error)}") from error


_TYPE_PROBLEMS = {
    "extra_forbidden": "is not a policy setting",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "string_type": "must be text",
    "int_type": "must be a whole number (or null for no limit)",
    "int_parsing": "must be a whole number (or null for no limit)",
    "greater_than_equal": "must be at least 1 (or null for no limit)",
    "less_than_equal": "must be at most 1000000 (or null for no limit)",
}


def _first_problem(error: ValidationError) -> str:
    """`where what`: the dotted place of the first problem and what is wrong there."""
    first = error.errors()[0]
    keys = [str(part) for part in first["loc"]]
    is_key = keys[-1:] == ["[key]"]  # a mapping key (a group or template name) is wrong
    if is_key:
        keys = keys[:-1]
    if first["type"] == "string_pattern_mismatch":
        detail = _pattern_hint(keys, is_key=is_key)
    else:
        detail = _TYPE_PROBLEMS.get(first["type"]) or first["msg"].removeprefix("Value error, ")
    where = ".".join(shown_key(key) for key in keys)
    return f"{where} {detail}" if where else detail


def shown_key(key: object) -> str:
    """A key from the file as one short line: as written when plain, quoted (repr) when not."""
    text = str(key)
    if re.fullmatch(r"[\w.*:@#/-]{1,80}", text, flags=re.ASCII):
        return text
    return repr(text[:80])


def _pattern_hint(keys: list[str], *, is_key: bool) -> str:
    if "channels" in keys:
        return "is not a channel ID (use the ID, e.g. C0123456789, not #name)"
    if keys[:1] == ["groups"]:
        if is_key:
            return "is not a group name (lowercase letters, digits, `-`, `_`, `.`)"
        return "is not a Slack user ID (e.g. U0123456789)"
    if keys[:1] == ["templates"] and is_key:
        return "is not a template name (or `*`)"
    return "is not a Slack user ID (e.g. U0123456789) or group:<name>"
