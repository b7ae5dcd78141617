"""Parameters are data, never code: values reach Argo only as `arguments.parameters[].value`.

A value cannot add fields, labels or annotations to the Workflow, cannot name a parameter the
template does not declare, and cannot carry an Argo expression (`{{…}}`), which Argo would
evaluate inside the workflow. Through the real command for the answers, and as properties of
the validator and the manifest builder.
"""

from __future__ import annotations

import copy
import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.models import ParameterSpec, TemplateInfo
from bot.parameters import MAX_VALUE_LENGTH, ParameterError, validate_parameters
from tests.conftest import Bot
from workflows.manifest import build_workflow

FUZZ = settings(max_examples=150, deadline=None)
TEMPLATE = TemplateInfo(
    name="report",
    parameters=(
        ParameterSpec(name="title", default="x"),
        ParameterSpec(name="format", default="md", enum=("md", "json")),
        ParameterSpec(name="rows"),
    ),
    enabled=True,
)


async def private_answer(bot: Bot, text: str) -> str:
    await bot.command(text)
    await bot.wait_idle()
    return str(bot.slack.responses[-1].body["text"])


@pytest.mark.parametrize(
    "value",
    [
        "{{workflow.serviceAccountName}}",
        "{{=sprig.env('ARGO_TOKEN')}}",
        "{{ inputs.parameters.secret }}",
        "prefix {{workflow.name}} suffix",
    ],
)
async def test_argo_expressions_in_values_are_refused(bot: Bot, value: str) -> None:
    answer = await private_answer(bot, f'run csv-summary title="{value}"')
    assert answer == ":warning: `title` may not contain `{{`."
    assert bot.argo.created == [] and bot.slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (
            "run csv-summary metadata.labels.evil=1",
            ":warning: `metadata.labels.evil` is not a parameter of `csv-summary` "
            "(it takes `rows`, `title`, `format`).",
        ),
        (
            "run csv-summary serviceAccountName=admin",
            ":warning: `serviceAccountName` is not a parameter of `csv-summary` "
            "(it takes `rows`, `title`, `format`).",
        ),
        ("run csv-summary title=a\x07b", ":warning: `title` contains control characters."),
        (
            f"run csv-summary title={'x' * (MAX_VALUE_LENGTH + 1)}",
            f":warning: `title` is longer than {MAX_VALUE_LENGTH} characters.",
        ),
    ],
)
async def test_parameters_the_template_does_not_declare_or_bad_values_are_refused(
    bot: Bot, text: str, answer: str
) -> None:
    assert await private_answer(bot, text) == answer
    assert bot.argo.created == []


async def test_json_and_yaml_in_a_value_arrive_as_that_exact_string(bot: Bot) -> None:
    hostile = '", "labels": {"evil": "1"}, "x": "\nmetadata:\n  labels: {evil: "1"}'
    await bot.command(f"run csv-summary title='{hostile}'")
    [name] = await bot.started_runs(1)
    await bot.wait_idle()
    [manifest] = bot.argo.created
    assert manifest["spec"]["arguments"]["parameters"] == [{"name": "title", "value": hostile}]
    assert "evil" not in json.dumps(manifest["metadata"])
    assert set(manifest["spec"]) == {"workflowTemplateRef", "arguments", "hooks"}
    assert bot.argo.workflows[name]["metadata"]["labels"].get("evil") is None


@FUZZ
@given(st.dictionaries(st.sampled_from(["title", "format", "rows", "x"]), st.text(max_size=60)))
def test_a_value_that_passes_validation_is_plain_data(given_values: dict[str, str]) -> None:
    try:
        accepted = validate_parameters(TEMPLATE, given_values)
    except ParameterError as error:
        assert str(error)
        return
    assert accepted == given_values
    for value in accepted.values():
        assert "{{" not in value and len(value) <= MAX_VALUE_LENGTH
        assert not any(unicodedata.category(c) == "Cc" and c not in "\t\n" for c in value)


@FUZZ
@given(
    parameters=st.dictionaries(st.text(min_size=1, max_size=30), st.text(max_size=200)),
    artifacts=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=80)),
)
def test_values_change_nothing_in_the_manifest_but_their_own_entries(
    parameters: dict[str, str], artifacts: dict[str, str]
) -> None:
    common = {
        "name": "report-x7k2p",
        "namespace": "argo",
        "template": "report",
        "hook_url": "http://bot/hooks/argo",
        "hook_token": "t" * 64,
        "notify_template": "argo-chatops-notify",
        "annotations": {"argo-chatops/user": "U1"},
    }
    bare = build_workflow(**common, parameters={})
    built = build_workflow(**common, parameters=parameters, input_artifacts=artifacts)
    assert json.loads(json.dumps(built)) == built  # plain JSON data, no objects
    assert built["spec"]["arguments"]["parameters"] == [
        {"name": name, "value": value} for name, value in parameters.items()
    ]
    expected = copy.deepcopy(bare)
    expected["spec"]["arguments"] = built["spec"]["arguments"]
    assert built == expected  # metadata, labels, hooks: exactly as without the values
