"""The buttons on a run's messages: their action ids, values and Block Kit.

A leaf module (only the Block Kit builders and the models), so both the message renderers and the
action handlers can use it. Every button carries the workflow name as its value; what a
click does is decided again from the store, never from the button.
"""

from __future__ import annotations

from typing import Any

from bot.blocks import actions, button, confirm
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
    sure = confirm(
        title="Stop this run?",
        text=f"Argo stops `{name}`; its exit handler still runs.",
        ok="Stop it",
        deny="Keep running",
    )
    stop = button("Stop", STOP, name, style="danger", confirm=sure)
    return actions(f"run_root:{name}", [stop])


def result_block(name: str, phase: Phase, ui_link: str | None) -> dict[str, Any]:
    """The announcement: Logs, Retry (failures only), Resubmit, and Open in Argo."""
    elements = [button("Logs", LOGS, name)]
    if phase in (Phase.FAILED, Phase.ERROR):
        elements.append(button("Retry", RETRY, name, style="primary"))
    elements.append(button("Resubmit", RESUBMIT, name))
    if ui_link:
        elements.append(button("Open in Argo", OPEN_IN_ARGO, name, url=ui_link))
    return actions(f"run_result:{name}", elements)
