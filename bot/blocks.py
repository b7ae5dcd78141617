"""Block Kit as plain dicts: the few pieces the bot's messages and its run form are made of.

Built directly instead of through slack_sdk's model objects, whose `to_dict()` validates and
walks every attribute reflectively (a noticeable share of the CPU of each announced run). The
dicts are the ones `to_dict()` gave: keys in alphabetical order, None or empty attributes left
out, a button's text as plain_text with emoji on, and Slack's limits enforced with the same
error (`SlackObjectFormationError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackObjectFormationError

SECTION_TEXT_LIMIT = 3000  # characters in one section's text


def _check(valid: bool, message: str) -> None:
    if not valid:
        raise SlackObjectFormationError(message)


def _text(kind: str, text: str, emoji: bool | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {} if emoji is None else {"emoji": emoji}
    if text:  # an empty text is left out, as slack_sdk did
        obj["text"] = text
    obj["type"] = kind
    return obj


def mrkdwn(text: str) -> dict[str, Any]:
    return _text("mrkdwn", text)


def plain_text(text: str, *, emoji: bool | None = None) -> dict[str, Any]:
    return _text("plain_text", text, emoji)


def _check_block_id(block_id: str) -> None:
    _check(len(block_id) <= 255, "block_id cannot exceed 255 characters")


# -- messages -------------------------------------------------------------------------------


def section(text: str) -> dict[str, Any]:
    """A section of mrkdwn text (at most 3000 characters: callers shorten what may be longer)."""
    _check(
        len(text) <= SECTION_TEXT_LIMIT,
        f"text attribute cannot exceed {SECTION_TEXT_LIMIT} characters",
    )
    return {"text": mrkdwn(text), "type": "section"}


def context(text: str) -> dict[str, Any]:
    """A context block with one mrkdwn element (the small grey line under a message)."""
    return {"elements": [mrkdwn(text)], "type": "context"}


def confirm(*, title: str, text: str, ok: str, deny: str) -> dict[str, Any]:
    """The "are you sure?" dialog of a button (its keys in Slack's order, as slack_sdk gave)."""
    _check(len(title) <= 100, "title attribute cannot exceed 100 characters")
    _check(len(text) <= 300, "text attribute cannot exceed 300 characters")
    _check(len(ok) <= 30, "confirm attribute cannot exceed 30 characters")
    _check(len(deny) <= 30, "deny attribute cannot exceed 30 characters")
    return {
        "title": plain_text(title),
        "text": mrkdwn(text),
        "confirm": plain_text(ok),
        "deny": plain_text(deny),
    }


def button(
    text: str,
    action_id: str,
    value: str,
    *,
    style: str | None = None,
    url: str | None = None,
    confirm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    _check(len(action_id) <= 255, "action_id attribute cannot exceed 255 characters")
    _check(len(text) <= 75, "text attribute cannot exceed 75 characters")
    _check(url is None or len(url) <= 3000, "url attribute cannot exceed 3000 characters")
    _check(len(value) <= 2000, "value attribute cannot exceed 2000 characters")
    _check(
        style in (None, "primary", "danger"),
        "style attribute must be one of the following values: primary, danger",
    )
    element: dict[str, Any] = {"action_id": action_id}
    if confirm:
        element["confirm"] = confirm
    if style:
        element["style"] = style
    element["text"] = plain_text(text, emoji=True)
    element["type"] = "button"
    if url:
        element["url"] = url
    if value:
        element["value"] = value
    return element


def actions(block_id: str, elements: Sequence[dict[str, Any]]) -> dict[str, Any]:
    _check_block_id(block_id)
    _check(len(elements) <= 25, "elements attribute cannot exceed 25 elements")
    return {"block_id": block_id, "elements": list(elements), "type": "actions"}


# -- modals ---------------------------------------------------------------------------------


def input_block(
    block_id: str,
    label: str,
    element: dict[str, Any],
    *,
    optional: bool,
    hint: str | None = None,
) -> dict[str, Any]:
    _check_block_id(block_id)
    _check(hint is None or len(hint) <= 2000, "hint attribute cannot exceed 2000 characters")
    _check(len(label) <= 2000, "label attribute cannot exceed 2000 characters")
    block: dict[str, Any] = {"block_id": block_id, "element": element}
    if hint:
        block["hint"] = plain_text(hint)
    block["label"] = plain_text(label)
    block["optional"] = optional
    block["type"] = "input"
    return block


def file_input(action_id: str, *, max_files: int) -> dict[str, Any]:
    return {"action_id": action_id, "max_files": max_files, "type": "file_input"}


def plain_text_input(action_id: str, *, initial_value: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {"action_id": action_id}
    if initial_value:
        element["initial_value"] = initial_value
    element["type"] = "plain_text_input"
    return element


def option(value: str) -> dict[str, Any]:
    """A select option showing its own value."""
    _check(len(value) <= 75, "text attribute cannot exceed 75 characters")
    _check(len(value) <= 150, "value attribute cannot exceed 150 characters")
    return {"text": plain_text(value), "value": value}


def static_select(
    action_id: str, values: Sequence[str], *, initial: str | None = None
) -> dict[str, Any]:
    """A select of `values`, with `initial` chosen when it is one of them."""
    _check(len(values) <= 100, "options attribute cannot exceed 100 elements")
    element: dict[str, Any] = {"action_id": action_id}
    if initial is not None and initial in values:
        element["initial_option"] = option(initial)
    if values:
        element["options"] = [option(value) for value in values]
    element["type"] = "static_select"
    return element


def modal(
    *,
    callback_id: str,
    title: str,
    submit: str,
    close: str,
    private_metadata: str,
    blocks: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    _check(0 < len(blocks) <= 100, "views must contain between 1 and 100 blocks")
    _check(len(callback_id) <= 255, "callback_id cannot exceed 255 characters")
    _check(len(close) <= 24, "close cannot exceed 24 characters")
    _check(len(private_metadata) <= 3000, "private_metadata cannot exceed 3000 characters")
    _check(len(submit) <= 24, "submit cannot exceed 24 characters")
    _check(1 <= len(title) <= 24, "title must be between 1 and 24 characters")
    view: dict[str, Any] = {"blocks": list(blocks), "callback_id": callback_id}
    view["close"] = plain_text(close)
    if private_metadata:
        view["private_metadata"] = private_metadata
    view["submit"] = plain_text(submit)
    view["title"] = plain_text(title)
    view["type"] = "modal"
    return view
