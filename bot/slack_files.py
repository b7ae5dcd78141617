"""Files people share in Slack, and the hosts that may receive the bot token to fetch them.

A Slack file object is translated into `SlackFile` at the edge. Whether a download URL may
carry `Authorization: Bearer <bot token>` is decided here, in one place: only hosts listed in
`SLACK_FILE_HOSTS` get it, so a crafted file object (or a redirect) cannot send the token
anywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


class SlackFile(BaseModel):
    """A file attached to a message or a modal, as far as the bot needs to know it."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    size: int | None = None
    mimetype: str = ""
    filetype: str = ""
    url: str | None = None  # url_private_download, else url_private

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> SlackFile:
        size = raw.get("size")
        return cls(
            id=str(raw.get("id", "")),
            name=str(raw.get("name") or raw.get("title") or raw.get("id") or "file"),
            size=size if isinstance(size, int) and size >= 0 else None,
            mimetype=str(raw.get("mimetype") or ""),
            filetype=str(raw.get("filetype") or ""),
            url=raw.get("url_private_download") or raw.get("url_private") or None,
        )

    @property
    def needs_lookup(self) -> bool:
        """Slack Connect shares arrive as `file_access: check_file_info`, without URLs."""
        return self.url is None


@dataclass(frozen=True)
class FileHosts:
    """`SLACK_FILE_HOSTS`: `host` entries match that host over https on any port;
    `host:port` entries match exactly that host and port (for local stand-ins)."""

    entries: tuple[tuple[str, int | None], ...]

    @classmethod
    def parse(cls, items: Iterable[str]) -> FileHosts:
        entries = []
        for item in items:
            host, colon, port = item.strip().lower().partition(":")
            if not _HOST.match(host) or (colon and not (port.isdigit() and 0 < int(port) < 65536)):
                raise ValueError(f"{item.strip()!r} is not a host or host:port")
            entries.append((host, int(port) if colon else None))
        if not entries:
            raise ValueError("must list at least one host")
        return cls(tuple(entries))

    def allows(self, url: str) -> bool:
        """True when `url` may be fetched with the bot token."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or parts.username or parts.password:
            return False
        for allowed_host, allowed_port in self.entries:
            if host != allowed_host:
                continue
            if allowed_port is None and parts.scheme == "https":
                return True
            effective = port if port is not None else (443 if parts.scheme == "https" else 80)
            if allowed_port is not None and effective == allowed_port:
                return True
        return False

    def __str__(self) -> str:
        return ",".join(h if p is None else f"{h}:{p}" for h, p in self.entries)
