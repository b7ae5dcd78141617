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
    problems = [p for found in parameter_problems(template, given).values() for p in found]
    if problems:
        raise ParameterError("\n".join(problems))
    return dict(given)


def parameter_problems(template: TemplateInfo, given: Mapping[str, str]) -> dict[str, list[str]]:
    """Every problem, by parameter name (a form shows each under its own field)."""
    problems: dict[str, list[str]] = {}
    declared = [p.name for p in template.parameters]
    for name, value in given.items():
        spec = template.parameter(name)
        if spec is None:
            takes = ", ".join(f"`{n}`" for n in declared) or "no parameters"
            problems[name] = [
                f"`{name}` is not a parameter of `{template.name}` (it takes {takes})."
            ]
            continue
        found = []
        if spec.enum and value not in spec.enum:
            choices = ", ".join(f"`{choice}`" for choice in spec.enum)
            found.append(f"`{name}` must be one of {choices} (got `{value[:80]}`).")
        found.extend(_value_problems(name, value))
        if found:
            problems[name] = found
    for spec in template.parameters:
        if spec.required and spec.name not in given:
            problems[spec.name] = [f"`{spec.name}` is required: add `{spec.name}=...`."]
    return problems


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
