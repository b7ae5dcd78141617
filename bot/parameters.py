"""Check parameter values against what a WorkflowTemplate declares.

Argo silently accepts parameters a template does not declare, so the bot must refuse them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from bot.models import TemplateInfo

MAX_VALUE_LENGTH = 4096


class ParameterError(ValueError):
    """A parameter problem, worded for the person who typed the command."""


def validate_parameters(template: TemplateInfo, given: Mapping[str, str]) -> dict[str, str]:
    """The parameters to send to Argo (those given), or ParameterError naming every problem."""
    problems: list[str] = []
    declared = [p.name for p in template.parameters]
    for name, value in given.items():
        spec = template.parameter(name)
        if spec is None:
            takes = ", ".join(f"`{n}`" for n in declared) or "no parameters"
            problems.append(f"`{name}` is not a parameter of `{template.name}` (it takes {takes}).")
            continue
        if spec.enum and value not in spec.enum:
            choices = ", ".join(f"`{choice}`" for choice in spec.enum)
            problems.append(f"`{name}` must be one of {choices} (got `{value[:80]}`).")
        problems.extend(_value_problems(name, value))
    for spec in template.parameters:
        if spec.required and spec.name not in given:
            problems.append(f"`{spec.name}` is required: add `{spec.name}=...`.")
    if problems:
        raise ParameterError("\n".join(problems))
    return dict(given)


def _value_problems(name: str, value: str) -> list[str]:
    problems = []
    if len(value) > MAX_VALUE_LENGTH:
        problems.append(f"`{name}` is longer than {MAX_VALUE_LENGTH} characters.")
    if any(unicodedata.category(char) == "Cc" and char not in "\t\n" for char in value):
        problems.append(f"`{name}` contains control characters.")
    if "{{" in value:
        # Argo would evaluate it as an expression inside the workflow.
        problems.append(f"`{name}` may not contain `{{{{`.")
    return problems
