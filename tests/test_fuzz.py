"""Hostile input, generated: parsers and endpoints answer everything without crashing.

Property-based (hypothesis), bounded so the whole file runs in well under a minute: the command
parser, the routes and policy files, file names, the exit-hook endpoint and the Slack endpoint
through the real app. Each property says what the only acceptable outcomes are; anything
else (another exception type, a 5xx) is a finding.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
import string
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.commands import (
    PARAMETER_NAME,
    TEMPLATE_NAME,
    ActionCommand,
    AuditCommand,
    CommandError,
    LogsCommand,
    RunCommand,
    StatusCommand,
    parse_command,
    split_words,
)
from bot.filenames import MAX_NAME_LENGTH, safe_file_name, unique_file_names
from bot.policy import PolicyError, load_policy
from bot.routes import RoutesError, load_routes
from handlers.hooks import MAX_HOOK_BODY_BYTES
from stand_ins.slack_requests import FORM, JSON, interaction, signed, slash_command
from tests.conftest import SIGNING_SECRET, WEBHOOK_SECRET, Bot
from workflows.manifest import hook_token

# CI's budget; `FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py` searches longer by hand.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HTTP_FUZZ = settings(FUZZ, max_examples=EXAMPLES * 4 // 5)

HOOK_STATUSES = {202, 400, 401, 404, 413}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only here: the endpoints' answers do not depend on the database."""
    return f"sqlite:///{tmp_path / 'fuzz.db'}"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One file reused by every example (hypothesis runs many examples per test)."""
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "file.yaml"


# -- strategies -------------------------------------------------------------------------------


def command_body(text: str) -> bytes:
    return slash_command(text, response_url="https://hooks.slack.test/commands/T1/1/x")


# Words people (or attackers) type after /argo: verbs, assignments, quotes, Slack escapes.
_WORDS = st.one_of(
    st.sampled_from(
        [
            "run",
            "help",
            "templates",
            "list",
            "status",
            "logs",
            "stop",
            "terminate",
            "retry",
            "resubmit",
            "audit",
            "mine",
            "all",
            "failed",
            "csv-summary",
            "csv-summary-x7k2p",
            "rows=5",
            'title="a b"',
            "x=",
            "=y",
            "'",
            '"',
            "\u201c",
            "\u2019",
            "&lt;",
            "&amp;",
            "<https://a.example|a>",
            "{{workflow.name}}",
            "`",
            "\\",
            "\n",
            "\x00",
            "-h",
        ]
    ),
    st.text(max_size=20),
)
COMMAND_TEXT = st.one_of(st.text(max_size=300), st.lists(_WORDS, max_size=8).map(" ".join))

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["U1", "C0DATA", "csv-summary", "*", "group:ops", "csv", ""]),
)
YAML_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), children, max_size=4),
    ),
    max_leaves=20,
)


def near_valid(keys: list[str]) -> st.SearchStrategy[Any]:
    """Mappings with the file's own top-level keys: they get past the first checks."""
    return st.dictionaries(st.sampled_from(keys), YAML_VALUES, max_size=len(keys))


YAML_DOCUMENTS = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    YAML_VALUES.map(lambda v: yaml.safe_dump(v).encode()),
)
POLICY_DOCUMENTS = st.one_of(
    YAML_DOCUMENTS,
    near_valid(["admins", "groups", "templates", "control_others", "rate_limits"]).map(
        lambda v: yaml.safe_dump(v).encode()
    ),
    st.fixed_dictionaries(
        {"templates": st.dictionaries(st.sampled_from(["csv-summary", "*", "X"]), YAML_VALUES)}
    ).map(lambda v: yaml.safe_dump(v).encode()),
)
ROUTES_DOCUMENTS = st.one_of(
    YAML_DOCUMENTS,
    st.fixed_dictionaries(
        {
            "drop_zones": st.dictionaries(
                st.sampled_from(["C0DROPS", "#general", "c1", ""]),
                near_valid(["template", "parameters", "file_types", "channel"]),
                max_size=3,
            )
        }
    ).map(lambda v: yaml.safe_dump(v).encode()),
)

K8S_NAMES = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?\Z")
# What an HTTP client can put in a header value: printable ASCII, no line breaks.
HEADER_TEXT = st.text(
    alphabet=[c for c in string.printable if c not in "\r\n\x0b\x0c"], max_size=120
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
HOOK_BODIES = st.one_of(
    st.binary(max_size=500),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "name": st.one_of(K8S_NAMES, st.text(max_size=40), st.integers()),
            "namespace": st.one_of(st.just("argo"), K8S_NAMES, st.none()),
        },
        optional={"status": st.text(max_size=20), "uid": st.text(max_size=20)},
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 60_000, b"{" * 10, b'{"name": "\\ud800"}', b"\xff\xfe", b""]),
)


# -- parsers ----------------------------------------------------------------------------------


@FUZZ
@given(COMMAND_TEXT)
def test_the_command_parser_raises_nothing_but_command_error(text: str) -> None:
    try:
        parsed = parse_command(text)
    except CommandError as error:
        assert str(error)  # always something to tell the person
        return
    if isinstance(parsed, RunCommand):
        assert TEMPLATE_NAME.match(parsed.template)
        assert all(PARAMETER_NAME.match(name) for name in parsed.parameters)
    if isinstance(parsed, StatusCommand | LogsCommand | ActionCommand):
        assert len(parsed.workflow) <= 63 and TEMPLATE_NAME.match(parsed.workflow)
    if isinstance(parsed, AuditCommand) and parsed.target is not None:
        assert TEMPLATE_NAME.match(parsed.target)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=120),
        st.text(alphabet=" \t\r\n\u00a0\u2003\x1c\x85#'\"\\=ab-", max_size=60),
    )
)
def test_words_are_split_exactly_as_shlex_splits_them(text: str) -> None:
    try:
        expected = shlex.split(text, posix=True)
    except ValueError:
        with pytest.raises(ValueError):
            split_words(text)
        return
    assert split_words(text) == expected


@FUZZ
@given(POLICY_DOCUMENTS)
def test_the_policy_file_fails_only_with_policy_error(scratch: Path, document: bytes) -> None:
    scratch.write_bytes(document)
    try:
        load_policy(scratch)
    except PolicyError as error:
        assert str(error).startswith(f"{scratch}: ") and "\n" not in str(error)


@FUZZ
@given(ROUTES_DOCUMENTS)
def test_the_routes_file_fails_only_with_routes_error(scratch: Path, document: bytes) -> None:
    scratch.write_bytes(document)
    try:
        load_routes(scratch)
    except RoutesError as error:
        assert str(error).startswith(f"{scratch}: ") and "\n" not in str(error)


def test_deeply_nested_or_non_utf8_files_are_refused_in_plain_words(scratch: Path) -> None:
    for document, expected in ((b"[" * 5000, "nested too deeply"), (b"\xff\xfe", "not UTF-8")):
        scratch.write_bytes(document)
        with pytest.raises(RoutesError, match=expected):
            load_routes(scratch)
        with pytest.raises(PolicyError, match=expected):
            load_policy(scratch)


@FUZZ
@given(st.text(max_size=400))
def test_a_file_name_always_becomes_one_safe_path_segment(name: str) -> None:
    safe = safe_file_name(name)
    assert _SAFE_NAME.match(safe), safe
    assert len(safe) <= MAX_NAME_LENGTH
    assert ".." not in safe and safe not in (".", "..")


@FUZZ
@given(st.lists(st.text(max_size=120), max_size=12))
def test_file_names_sharing_a_folder_stay_distinct_and_safe(names: list[str]) -> None:
    unique = unique_file_names(names)
    assert len(unique) == len(names)
    assert len({name.lower() for name in unique}) == len(unique)
    assert all(_SAFE_NAME.match(name) and len(name) <= MAX_NAME_LENGTH for name in unique)


# -- the exit hook ----------------------------------------------------------------------------


@HTTP_FUZZ
@given(
    body=HOOK_BODIES,
    authorization=st.one_of(HEADER_TEXT, HEADER_TEXT.map("Bearer {}".format), st.none()),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www"]),
)
async def test_the_hook_endpoint_answers_any_request_without_failing(
    bot: Bot, body: bytes, authorization: str | None, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with bot.http.post(f"{bot.url}hooks/argo", data=body, headers=headers) as response:
        assert response.status in HOOK_STATUSES, (response.status, await response.text())
        assert (await response.json())["status"] == response.status


@HTTP_FUZZ
@given(name=K8S_NAMES, namespace=st.one_of(st.just("argo"), K8S_NAMES), extra=JSON_VALUES)
async def test_a_correctly_signed_hook_for_an_unknown_workflow_is_404(
    bot: Bot, name: str, namespace: str, extra: Any
) -> None:
    body = {"extra": extra, "status": extra, "name": name, "namespace": namespace}
    response = await bot.hook(name, namespace=namespace, body=body)
    assert response.status == 404


@pytest.mark.parametrize("size", [MAX_HOOK_BODY_BYTES + 1, 5 * 1024 * 1024])
async def test_a_hook_body_over_the_limit_is_413(bot: Bot, size: int) -> None:
    body = b'{"name": "' + b"a" * size + b'"}'
    token = hook_token(WEBHOOK_SECRET, "argo", "x")
    async with bot.http.post(
        f"{bot.url}hooks/argo", data=io.BytesIO(body), headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 413


# -- the Slack endpoint -----------------------------------------------------------------------


def _is_ssl_check(body: bytes) -> bool:
    from urllib.parse import parse_qs

    return parse_qs(body.decode("utf-8", "replace")).get("ssl_check") == ["1"]


@HTTP_FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=600),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.text(max_size=80).map(command_body),
        st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5).map(
            lambda v: urlencode(v).encode()
        ),
        st.text(max_size=200).map(lambda v: b"payload=" + quote(v).encode()),
    ),
    timestamp=st.one_of(
        st.just("now"), st.just("stale"), HEADER_TEXT, st.integers().map(str), st.none()
    ),
    signature=st.one_of(
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map("v0={}".format),
        HEADER_TEXT,
        st.none(),
    ),
    content_type=st.sampled_from([FORM, JSON, f"{FORM}; charset=nope", "text/plain", ""]),
)
async def test_the_slack_endpoint_answers_401_to_anything_not_signed_by_slack(
    bot: Bot, body: bytes, timestamp: str | None, signature: str | None, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if timestamp is not None:
        now = int(time.time())
        moments = {"now": str(now), "stale": str(now - 301)}
        headers["X-Slack-Request-Timestamp"] = moments.get(timestamp, timestamp)
    if signature is not None:
        headers["X-Slack-Signature"] = signature
    async with bot.http.post(f"{bot.url}slack/events", data=body, headers=headers) as response:
        expected = 200 if _is_ssl_check(body) else 401
        assert response.status == expected, (response.status, await response.text())


@HTTP_FUZZ
@given(body=st.text(max_size=80).map(command_body), skew=st.integers(301, 10**9))
async def test_a_correct_signature_outside_the_five_minute_window_is_401(
    bot: Bot, body: bytes, skew: int
) -> None:
    # Timestamps are whole seconds; the service compares them with its own clock, fractions
    # included. Round away from now and leave a second for the request in flight, so the
    # future side is never 300.4 s ahead when it reaches the service.
    now = time.time()
    for moment in (math.floor(now) - skew, math.ceil(now) + skew + 1):
        headers = signed(SIGNING_SECRET, body, content_type=FORM, timestamp=moment)
        async with bot.http.post(f"{bot.url}slack/events", data=body, headers=headers) as r:
            assert r.status == 401


@HTTP_FUZZ
@given(body=st.text(max_size=80).map(command_body), tail=st.binary(min_size=1))
async def test_a_signed_body_changed_in_transit_is_401(bot: Bot, body: bytes, tail: bytes) -> None:
    headers = signed(SIGNING_SECRET, body, content_type=FORM)
    async with bot.http.post(f"{bot.url}slack/events", data=body + tail, headers=headers) as r:
        assert r.status == 401


async def test_a_slack_body_over_one_mebibyte_is_413(bot: Bot) -> None:
    body = command_body("run csv-summary title=" + "x" * (1024 * 1024))
    headers = signed(SIGNING_SECRET, body, content_type=FORM)
    async with bot.http.post(
        f"{bot.url}slack/events", data=io.BytesIO(body), headers=headers
    ) as response:
        assert response.status == 413


@settings(FUZZ, max_examples=EXAMPLES * 2 // 5)
@given(COMMAND_TEXT)
async def test_any_signed_command_text_is_answered_200_and_never_breaks_the_bot(
    bot: Bot, text: str
) -> None:
    bot.argo.auto_run = False  # a run that does start need not execute its steps
    before = len(bot.argo.created)
    response = await bot.command(text)
    assert response.status == 200 and response.text
    await bot.wait_idle()
    assert len(bot.argo.created) - before <= 1


@settings(FUZZ, max_examples=EXAMPLES * 2 // 5)
@given(payload=JSON_VALUES)
async def test_any_signed_interaction_payload_is_answered_without_a_5xx(
    bot: Bot, payload: Any
) -> None:
    body = (
        interaction(payload)
        if isinstance(payload, dict)
        else b"payload=" + quote(json.dumps(payload)).encode()
    )
    headers = signed(SIGNING_SECRET, body, content_type=FORM)
    async with bot.http.post(f"{bot.url}slack/events", data=body, headers=headers) as response:
        assert response.status < 500, await response.text()
    await bot.wait_idle()


@HTTP_FUZZ
@given(
    path=st.text(max_size=60).map(lambda p: quote(p, safe="/")),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
)
async def test_no_path_or_method_gets_a_5xx(bot: Bot, path: str, method: str) -> None:
    async with bot.http.request(method, f"{bot.url}{path.lstrip('/')}", data=b"x") as response:
        assert response.status < 500
