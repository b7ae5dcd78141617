"""The text after `/argo`: quoting, Slack's escaping, and clear errors."""

from __future__ import annotations

import pytest

from bot.commands import CommandError, HelpCommand, RunCommand, parse_command


@pytest.mark.parametrize(
    ("text", "parameters"),
    [
        ("run csv-summary", {}),
        ("run csv-summary rows=5", {"rows": "5"}),
        ('run csv-summary msg="hello world" n=1', {"msg": "hello world", "n": "1"}),
        ("run csv-summary msg='single quoted'", {"msg": "single quoted"}),
        ("run csv-summary msg=\u201ccurly quotes\u201d", {"msg": "curly quotes"}),
        ("run csv-summary expr=a&lt;b&amp;c&gt;d", {"expr": "a<b&c>d"}),
        (
            "run csv-summary url=<https://example.com/x|example.com/x>",
            {"url": "https://example.com/x"},
        ),
        ("run csv-summary empty=", {"empty": ""}),
        ("run csv-summary eq=a=b", {"eq": "a=b"}),
        ("  RUN   csv-summary   rows=5  ", {"rows": "5"}),
    ],
)
def test_run_commands_parse_to_template_and_parameters(text: str, parameters: dict) -> None:
    assert parse_command(text) == RunCommand(template="csv-summary", parameters=parameters)


@pytest.mark.parametrize("text", ["", "help", "  ", "--help"])
def test_help(text: str) -> None:
    assert parse_command(text) == HelpCommand()


def test_unknown_verb_is_help_that_names_it() -> None:
    assert parse_command("deploy now") == HelpCommand(unknown_verb="deploy")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run", "Which template?"),
        ("run Not_A_Name", "is not a template name"),
        ("run csv-summary rows", "write `name=value`"),
        ("run csv-summary =5", "is not a valid parameter name"),
        ("run csv-summary a=1 a=2", "given twice"),
        ('run csv-summary msg="open', "check your quotes"),
    ],
)
def test_mistakes_explain_themselves(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("?", r"\?").replace("`", "`")):
        parse_command(text)
