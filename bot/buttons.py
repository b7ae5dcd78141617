"""The buttons on a run's messages: their action ids, values and Block Kit.

A leaf module (only slack_sdk and the models), so both the message renderers and the
action handlers can use it. Every button carries the workflow name as its value; what a
click does is decided again from the store, never from the button.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ActionsBlock, ButtonElement

from bot.models import Phase, RunAction

LOGS = "argo_logs"
STOP = "argo_stop"
RETRY = "argo_retry"
RESUBMIT = "argo_resubmit"
OPEN_IN_ARGO = "argo_open"  # a link button: Slack opens the URL and still sends a click

# Button action id -> what it asks of the run (Logs is not an action on the run).
ACTIONS = {STOP: RunAction.STOP, RETRY: RunAction.RETRY, RESUBMIT: RunAction.RESUBMIT}


def stop_block(name: str) -> dict[str, Any]:
    """The thread root of a running run: Stop (exit handlers still run)."""
    stop = ButtonElement(
        text="Stop",
        action_id=STOP,
        value=name,
        style="danger",
        confirm={
            "title": {"type": "plain_text", "text": "Stop this run?"},
            "text": {
                "type": "mrkdwn",
                "text": f"Argo stops `{name}`; its exit handler still runs.",
            },
            "confirm": {"type": "plain_text", "text": "Stop it"},
            "deny": {"type": "plain_text", "text": "Keep running"},
        },
    )
    return ActionsBlock(block_id=f"run_root:{name}", elements=[stop]).to_dict()


def result_block(name: str, phase: Phase, ui_link: str | None) -> dict[str, Any]:
    """The announcement: Logs, Retry (failures only), Resubmit, and Open in Argo."""
    elements = [ButtonElement(text="Logs", action_id=LOGS, value=name)]
    if phase in (Phase.FAILED, Phase.ERROR):
        elements.append(ButtonElement(text="Retry", action_id=RETRY, value=name, style="primary"))
    elements.append(ButtonElement(text="Resubmit", action_id=RESUBMIT, value=name))
    if ui_link:
        elements.append(
            ButtonElement(text="Open in Argo", action_id=OPEN_IN_ARGO, value=name, url=ui_link)
        )
    return ActionsBlock(block_id=f"run_result:{name}", elements=elements).to_dict()
