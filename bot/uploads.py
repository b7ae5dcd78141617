"""Relay files from Slack into S3: streamed, size-limited, hashed, and never leaking the token.

One file at a time goes from `url_private_download` to `sessions/<workflow>/inputs/<name>`
in chunks, so memory stays flat whatever the file's size (one S3 part in memory, one in
flight). On the way it is hashed (SHA-256), counted against `MAX_UPLOAD_BYTES`, and checked
for the HTML sign-in page Slack sends with status 200 when the token is missing or refused.
A failure aborts the multipart upload and deletes the run's inputs already stored, so a
workflow is never started on partial input.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import aclosing, asynccontextmanager

import aiohttp
from yarl import URL

from bot.filenames import display_file_name
from bot.inputs import InputError, PlannedInput
from bot.messages import code, format_size
from bot.models import RunInput
from bot.slack_files import FileHosts, SlackFile
from bot.storage import MAX_PARTS, PART_SIZE, S3Storage, StorageError

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# No total limit (a 1 GiB file takes a while); a stalled connection still fails.
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
_HTML_STARTS = (b"<!doctype html", b"<html")


class InputRelay:
    """Streams the files of a run from Slack into the artifact bucket."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        storage: S3Storage,
        bot_token: str,
        file_hosts: FileHosts,
        max_bytes: int,
        count_bytes: Callable[[int], object] | None = None,
    ) -> None:
        self._session = session
        self._storage = storage
        self._token = bot_token
        self._hosts = file_hosts
        self._max_bytes = max_bytes
        # Larger parts only when MAX_UPLOAD_BYTES would not fit in S3's 10,000 parts.
        self._part_size = max(PART_SIZE, -(-max_bytes // MAX_PARTS))
        self._count_bytes = count_bytes

    async def upload(self, workflow: str, planned: Sequence[PlannedInput]) -> list[RunInput]:
        """Store every file or none: on failure the ones already stored are deleted."""
        stored: list[RunInput] = []
        try:
            for item in planned:
                stored.append(await self._relay(workflow, item))
        except BaseException:
            await self.discard(stored)
            raise
        return stored

    async def discard(self, inputs: Iterable[RunInput]) -> None:
        """Best effort: inputs of a run that will not start are of no use to anyone."""
        try:
            await self._storage.delete(item.key for item in inputs)
        except StorageError:
            logger.exception("could not delete the inputs of a run that did not start")

    async def _relay(self, workflow: str, item: PlannedInput) -> RunInput:
        key = item.key(workflow)
        digest = hashlib.sha256()
        try:
            async with aclosing(self._download(item.file, digest)) as chunks:
                size = await self._storage.upload_stream(
                    key,
                    chunks,
                    content_type=item.file.mimetype or None,
                    part_size=self._part_size,
                )
        except StorageError as error:
            raise InputError(
                f"I could not store {code(item.file.name)} in the artifact bucket ({error})."
            ) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise InputError(
                f"The download of {code(item.file.name)} from Slack broke off "
                f"({error.__class__.__name__})."
            ) from error
        logger.info("input stored", extra={"run": workflow, "key": key, "bytes": size})
        return RunInput(
            artifact=item.artifact,
            file_name=display_file_name(item.file.name),
            key=key,
            slack_file_id=item.file.id,
            size=size,
            sha256=digest.hexdigest(),
        )

    async def _download(self, file: SlackFile, digest: hashlib._Hash) -> AsyncIterator[bytes]:
        """The file's bytes, checked as they arrive; raises InputError at the first problem."""
        received = 0
        async with self._open(file) as response:
            async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                if received == 0 and _is_sign_in_page(response, chunk, file):
                    raise InputError(
                        f"Slack answered with its sign-in page instead of {code(file.name)}: "
                        "the bot's token was refused or lacks the `files:read` scope. "
                        "Ask whoever manages the Slack app to check it."
                    )
                received += len(chunk)
                if received > self._max_bytes:
                    raise InputError(
                        f"{code(file.name)} is larger than the {format_size(self._max_bytes)} "
                        "limit; I stopped the upload."
                    )
                digest.update(chunk)
                if self._count_bytes is not None:
                    self._count_bytes(len(chunk))
                yield chunk
        if file.size is not None and received != file.size:
            raise InputError(
                f"Slack sent {format_size(received)} for {code(file.name)}, which should be "
                f"{format_size(file.size)}; I did not use it. Try sharing the file again."
            )

    @asynccontextmanager
    async def _open(self, file: SlackFile) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET the file with the token, following redirects only within SLACK_FILE_HOSTS."""
        if file.url is None or not self._hosts.allows(file.url):
            host = URL(file.url).host if file.url else "nowhere"
            raise InputError(
                f"{code(file.name)} does not point at Slack's file servers (it points at "
                f"{code(str(host))}), so I did not download it with the bot's token."
            )
        url = URL(file.url, encoded=True)
        for _ in range(MAX_REDIRECTS + 1):
            async with self._session.get(
                url,
                headers={"Authorization": f"Bearer {self._token}"},
                allow_redirects=False,
                timeout=DOWNLOAD_TIMEOUT,
            ) as response:
                if response.status in REDIRECT_STATUSES:
                    url = url.join(URL(response.headers.get("Location", ""), encoded=True))
                    if not self._hosts.allows(str(url)):
                        raise InputError(
                            f"Slack sent the download of {code(file.name)} to another host "
                            f"({code(str(url.host))}); I did not follow it, so the bot's token "
                            "stays with Slack."
                        )
                    continue
                if response.status != 200:
                    raise InputError(
                        f"Slack answered HTTP {response.status} for {code(file.name)}; "
                        "it may have been deleted, or the bot cannot see it."
                    )
                yield response
                return
        raise InputError(f"Slack redirected the download of {code(file.name)} too many times.")


def _is_sign_in_page(response: aiohttp.ClientResponse, first: bytes, file: SlackFile) -> bool:
    """Slack's answer to a bad token: an HTML page with status 200, not the file."""
    if file.mimetype.startswith("text/html") or file.filetype.lower() in ("html", "htm"):
        return False  # the person really shared HTML; the size check still applies
    if response.content_type == "text/html":
        return True
    return first[:512].lstrip().lower().startswith(_HTML_STARTS)
