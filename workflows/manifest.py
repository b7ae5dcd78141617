"""Build the Workflow objects the bot submits.

Values travel as data (`arguments.parameters[].value` strings in a dict that is serialised
as JSON), never by templating text, so a parameter value cannot add fields to the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any

MANAGED_LABEL = "argo-chatops/managed"
TEMPLATE_LABEL = "argo-chatops/template"
# The workflow's own name as a label, so one list call can read a batch of named workflows
# (`argo-chatops/run in (a,b,…)`; Argo's field selectors take a single name only).
RUN_LABEL = "argo-chatops/run"
USER_ANNOTATION = "argo-chatops/user"
CHANNEL_ANNOTATION = "argo-chatops/channel"
THREAD_ANNOTATION = "argo-chatops/thread-ts"

MAX_NAME_LENGTH = 63
SUFFIX_LENGTH = 5
# The alphabet Kubernetes uses for generateName suffixes: no vowels, no look-alikes.
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def workflow_name(template: str) -> str:
    """`<template>-<suffix>`: chosen by the bot so that a retried create is idempotent."""
    suffix = "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
    prefix = template[: MAX_NAME_LENGTH - SUFFIX_LENGTH - 1].rstrip("-.")
    return f"{prefix}-{suffix}"


def is_label_value(value: str) -> bool:
    """Whether a Kubernetes label may hold `value` (at most 63 characters, a narrow alphabet)."""
    return len(value) <= MAX_NAME_LENGTH and bool(_LABEL_VALUE.match(value))


def hook_token(secret: str, namespace: str, name: str) -> str:
    """The exit hook's credential for one workflow: HMAC-SHA256 of `namespace/name`.

    A leaked token only lets its holder ask the bot to re-check that one workflow.
    """
    message = f"{namespace}/{name}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def hook_token_matches(secret: str, namespace: str, name: str, presented: str) -> bool:
    expected = hook_token(secret, namespace, name)
    return hmac.compare_digest(expected.encode(), presented.encode())


def build_workflow(
    *,
    name: str,
    namespace: str,
    template: str,
    parameters: Mapping[str, str],
    hook_url: str,
    hook_token: str,
    notify_template: str,
    annotations: Mapping[str, str] | None = None,
    input_artifacts: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Workflow that runs `template` and calls the bot back when it exits.

    The exit hook is a `templateRef` to the shipped notify WorkflowTemplate; it is given
    `{{workflow.status}}` as an argument so that the notifier needs no Workflow variables
    that only validate under `onExit`.
    """
    labels = {MANAGED_LABEL: "true"}
    if is_label_value(template):
        labels[TEMPLATE_LABEL] = template
    if is_label_value(name):
        labels[RUN_LABEL] = name
    arguments: dict[str, Any] = {
        "parameters": [{"name": key, "value": str(value)} for key, value in parameters.items()]
    }
    if input_artifacts:
        arguments["artifacts"] = [
            {"name": artifact, "s3": {"key": key}} for artifact, key in input_artifacts.items()
        ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": arguments,
            "hooks": {
                "exit": {
                    "templateRef": {"name": notify_template, "template": "notify"},
                    "arguments": {
                        "parameters": [
                            {"name": "url", "value": hook_url},
                            {"name": "token", "value": hook_token},
                            {"name": "status", "value": "{{workflow.status}}"},
                        ]
                    },
                }
            },
        },
    }
