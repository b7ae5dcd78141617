"""The domain model shared by commands, buttons, hooks and the poller.

Raw Slack and Argo payloads are translated into these types at the edges.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Phase(enum.StrEnum):
    """Argo's workflow phases ("" until the controller picks a workflow up)."""

    UNKNOWN = ""
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"

    @property
    def is_final(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.ERROR)

    @classmethod
    def parse(cls, value: object) -> Phase:
        try:
            return cls(value or "")
        except ValueError:
            return cls.UNKNOWN


class RunState(enum.StrEnum):
    """Where a run is in the bot's own life cycle (not Argo's phase)."""

    UPLOADING = "uploading"  # recorded; its input files are being streamed into S3
    SUBMITTING = "submitting"
    RUNNING = "running"
    ANNOUNCED = "announced"
    REJECTED = "rejected"  # Argo refused the workflow: nothing was created
    RETRYING = "retrying"  # announced as failed; a retry is being asked of Argo (a lease)


class RunAction(enum.StrEnum):
    """What people can do to a run from Slack, by command or button."""

    STOP = "stop"  # running pods stop, exit handlers still run
    TERMINATE = "terminate"  # stop at once, exit handlers skipped
    RETRY = "retry"  # the same workflow re-runs its failed steps
    RESUBMIT = "resubmit"  # a new run of the same template and parameters


class ParameterSpec(BaseModel):
    """A parameter a WorkflowTemplate declares in spec.arguments.parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    default: str | None = None
    enum: tuple[str, ...] = ()
    description: str | None = None

    @property
    def required(self) -> bool:
        return self.default is None


class TemplateInfo(BaseModel):
    """What the bot needs to know about a WorkflowTemplate."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str | None = None
    parameters: tuple[ParameterSpec, ...] = ()
    input_artifacts: tuple[str, ...] = ()
    # Labelled `argo-chatops/enabled: "true"`: only such templates exist as far as Slack knows.
    enabled: bool = False

    def parameter(self, name: str) -> ParameterSpec | None:
        return next((p for p in self.parameters if p.name == name), None)


class SlackOrigin(BaseModel):
    """Who asked for a run, and where its thread lives."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    channel_id: str
    team_id: str | None = None
    response_url: str | None = None


class RunRequest(BaseModel):
    """A validated-enough request to start a run; the run service validates the rest."""

    model_config = ConfigDict(frozen=True)

    template: str
    parameters: dict[str, str] = Field(default_factory=dict)
    origin: SlackOrigin

    @staticmethod
    def payload(
        template: str,
        parameters: Mapping[str, str],
        *,
        user_id: str,
        channel_id: str,
        team_id: str | None,
        response_url: str | None,
    ) -> dict[str, Any]:
        """What `RunRequest(...).model_dump(mode="json")` would give, built without pydantic.

        For the request written down before a slash command's ack; the model is made from it
        (`model_validate`) after the ack. Building and dumping the two models cost a burst of
        500 commands 6 to 8 ms of the event loop before their acks (BENCHMARKS.md, round 7).
        """
        return {
            "template": template,
            "parameters": dict(parameters),
            "origin": {
                "user_id": user_id,
                "channel_id": channel_id,
                "team_id": team_id,
                "response_url": response_url,
            },
        }


class RunInput(BaseModel):
    """A file from Slack that became one of a run's input artifacts."""

    model_config = ConfigDict(frozen=True)

    artifact: str
    file_name: str  # as the person named it (shown, never used as a key)
    key: str  # sessions/<workflow>/inputs/<safe name>
    slack_file_id: str = ""
    size: int | None = None  # known once uploaded
    sha256: str | None = None


class Run(BaseModel):
    """A workflow the bot started, as the store keeps it."""

    name: str
    namespace: str
    template: str
    parameters: dict[str, str] = Field(default_factory=dict)
    user_id: str
    channel_id: str
    thread_ts: str | None = None
    # The bot's own message that shows the run's state (edited as it goes): the thread root,
    # or a reply when the thread is a person's message (file drops, mentions).
    root_ts: str | None = None
    inputs: tuple[RunInput, ...] = ()
    state: RunState = RunState.SUBMITTING
    phase: Phase = Phase.UNKNOWN
    created_at: datetime
    finished_at: datetime | None = None
    announced_at: datetime | None = None


class Artifact(BaseModel):
    """An output artifact of a finished run, with a link people can open."""

    model_config = ConfigDict(frozen=True)

    name: str
    step: str
    key: str
    bucket: str
    size: int | None = None
    url: str | None = None
    deleted: bool = False  # removed by Argo's artifact garbage collection

    @property
    def file_name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class FailedStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    message: str | None = None


class StepStatus(BaseModel):
    """One step (a pod) of a workflow: what is running, what failed, where its log is."""

    model_config = ConfigDict(frozen=True)

    name: str  # the node's displayName, e.g. `summarize`
    phase: str  # node phases include Skipped and Omitted, which are no workflow phase
    pod_name: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.phase in ("Pending", "Running")


class LogLine(BaseModel):
    """One line of a pod's main container log, as Argo streams it."""

    model_config = ConfigDict(frozen=True)

    content: str
    pod_name: str = ""


class WorkflowStatus(BaseModel):
    """Argo's view of one workflow, translated from the REST payload."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    phase: Phase
    completed: bool
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    progress: str | None = None
    failed_steps: tuple[FailedStep, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    steps: tuple[StepStatus, ...] = ()

    @property
    def running_steps(self) -> tuple[StepStatus, ...]:
        return tuple(step for step in self.steps if step.active)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


class AuditEntry(BaseModel):
    """One line of the audit trail: who did what, where, to what, and how it went."""

    model_config = ConfigDict(frozen=True)

    at: float  # epoch seconds
    actor: str | None = None  # a Slack user id; none for the exit hook
    channel: str | None = None
    action: str  # command | button | file | hook | modal
    target: str | None = None  # the workflow when there is one, else the template
    outcome: str  # ok | denied | invalid | error
    detail: str = ""
