"""Drop zones: channels where a plain file drop starts a run of one WorkflowTemplate.

Read once at start-up from `ROUTES_FILE` (YAML) and validated then, so a typo stops the
service with one clear line instead of surfacing at the first drop:

    drop_zones:
      C0123456789:                 # the channel ID (names can change; IDs cannot)
        template: summarize-csv
        parameters: {title: Dropped CSV}
        file_types: [csv, tsv]     # extensions; empty or absent: any type
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.commands import PARAMETER_NAME, TEMPLATE_NAME

if TYPE_CHECKING:
    import yaml

CHANNEL_ID = r"^[CG][A-Z0-9]{2,20}$"
_FILE_TYPE = r"^[a-z0-9]{1,16}$"


class RoutesError(ValueError):
    """The routes file cannot be used; the message names the file and the problem."""


class DropZone(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str = Field(pattern=CHANNEL_ID)
    template: str = Field(pattern=TEMPLATE_NAME.pattern)
    parameters: dict[str, str] = Field(default_factory=dict)
    file_types: frozenset[str] = frozenset()

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameter_values_are_text(cls, value: Any) -> Any:
        """YAML reads `rows: 5` as a number; Argo parameters are strings."""
        if not isinstance(value, Mapping):
            return value
        for name in value:
            if not isinstance(name, str) or not PARAMETER_NAME.match(name):
                raise ValueError(f"{name!r} is not a parameter name")
        return {name: _text(v) for name, v in value.items()}

    @field_validator("file_types", mode="before")
    @classmethod
    def _normalise_file_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple | set | frozenset):
            return value
        types = {str(item).strip().lower().removeprefix(".") for item in value}
        bad = sorted(t for t in types if not re.match(_FILE_TYPE, t))
        if bad:
            raise ValueError(f"{bad[0]!r} is not a file extension (write e.g. csv)")
        return frozenset(types)

    def allows(self, extension: str) -> bool:
        return not self.file_types or extension.lower() in self.file_types


class DropZones:
    """Lookup of drop zones by channel ID."""

    def __init__(self, zones: Mapping[str, DropZone] | None = None) -> None:
        self._zones = dict(zones or {})

    def __len__(self) -> int:
        return len(self._zones)

    def for_channel(self, channel_id: str) -> DropZone | None:
        return self._zones.get(channel_id)


def load_routes(path: Path | None) -> DropZones:
    """Parse and validate the routes file; RoutesError names what is wrong and where."""
    if path is None:
        return DropZones()
    document = read_yaml_file(path, RoutesError)
    if document is None:
        return DropZones()
    if not isinstance(document, dict) or set(document) - {"drop_zones"}:
        raise RoutesError(f"{path}: the top level must be a mapping with one key, drop_zones")
    raw_zones = document.get("drop_zones") or {}
    if not isinstance(raw_zones, dict):
        raise RoutesError(f"{path}: drop_zones must map channel IDs to routes")
    zones: dict[str, DropZone] = {}
    for channel, raw in raw_zones.items():
        where = f"{path}: drop_zones.{_shown(channel)}"
        if not isinstance(raw, dict):
            raise RoutesError(f"{where} must be a mapping with at least `template`")
        try:
            zones[str(channel)] = DropZone(channel=str(channel), **raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            if field == "channel":
                message = f"{where} is not a channel ID (use the ID, e.g. C0123456789, not #name)"
            else:
                detail = "is required" if first["type"] == "missing" else first["msg"]
                message = f"{where}.{field} {detail}"
            raise RoutesError(message) from error
        except TypeError as error:
            raise RoutesError(f"{where}: {error}") from error
    return DropZones(zones)


def read_yaml_file(path: Path, error_type: type[ValueError]) -> Any:
    """A settings file's YAML document (duplicate keys refused); `error_type` says in one
    line why it cannot be read, prefixed with the path."""
    import yaml  # only when a routes or policy file is set (RSS)

    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_unique_key_loader())
    except OSError as error:
        raise error_type(f"{path}: cannot read it ({error.strerror or error})") from error
    except yaml.YAMLError as error:
        raise error_type(f"{path}: not valid YAML ({_one_line(error)})") from error
    except UnicodeDecodeError as error:
        raise error_type(f"{path}: not valid YAML (not UTF-8 text: {error.reason})") from error
    except RecursionError as error:
        raise error_type(f"{path}: not valid YAML (nested too deeply)") from error


def _unique_key_loader() -> type[yaml.SafeLoader]:
    """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one)."""
    import yaml  # only when a routes or policy file is set (RSS)

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if value is None or isinstance(value, dict | list) else str(value)


def _shown(key: object) -> str:
    """A key from the file as one short line: as written when plain, quoted (repr) when not."""
    text = str(key)
    return text if re.fullmatch(r"[\w.#-]{1,80}", text, flags=re.ASCII) else repr(text[:80])


def _one_line(error: yaml.YAMLError) -> str:
    return " ".join(str(error).split())
