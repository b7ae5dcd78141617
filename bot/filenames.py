"""Turn the names people give their files into safe, unique S3 key segments.

A file name is user input: it may try path traversal (`../../x`), hide characters (control
and bidi/zero-width format characters such as U+202E, which makes `evil\u202ecsv.exe` look
like `evilexe.csv`), use look-alike full-width characters, or be thousands of characters
long. The result is plain ASCII `[A-Za-z0-9._-]`, has no leading dot, at most
`MAX_NAME_LENGTH` characters, and keeps the real extension, so type checks see what the
workflow will see.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_NAME_LENGTH = 100
MAX_EXTENSION_LENGTH = 16
FALLBACK_STEM = "file"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEPARATOR = re.compile(r"[/\\]")


def safe_file_name(name: str) -> str:
    """One file name, made safe (not yet unique)."""
    text = unicodedata.normalize("NFKC", name)  # full-width U+FF0F and friends become ASCII
    text = _SEPARATOR.split(text)[-1]  # only the last path component
    text = "".join(c for c in text if not unicodedata.category(c).startswith("C"))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", text))
    stem, dot, extension = text.rpartition(".")
    if not dot:
        stem, extension = text, ""
    extension = extension.strip("_-")[:MAX_EXTENSION_LENGTH].lower()
    stem = re.sub(r"_{2,}", "_", stem).strip("._-") or FALLBACK_STEM
    return _join(stem, extension, MAX_NAME_LENGTH)


def display_file_name(name: str) -> str:
    """The name as people wrote it, for messages and records: any script, but no control or
    format characters (NUL, newlines, bidi overrides) and at most 255 characters."""
    shown = "".join(c for c in name if not unicodedata.category(c).startswith("C")).strip()
    return (shown or FALLBACK_STEM)[:255]


def unique_file_names(names: Iterable[str]) -> list[str]:
    """Safe names for files that share one folder: clashes get `-2`, `-3`, … before the dot."""
    taken: set[str] = set()
    result = []
    for name in names:
        safe = safe_file_name(name)
        stem, _, extension = safe.rpartition(".") if "." in safe else (safe, "", "")
        candidate, counter = safe, 1
        while candidate.lower() in taken:
            counter += 1
            candidate = _join(f"{stem}-{counter}", extension, MAX_NAME_LENGTH, keep=f"-{counter}")
        taken.add(candidate.lower())
        result.append(candidate)
    return result


def extension(name: str) -> str:
    """The lower-case extension of a safe name ('' when there is none)."""
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def _join(stem: str, extension: str, limit: int, keep: str = "") -> str:
    """`stem.extension` cut to `limit` characters, cutting the stem but never `keep` at its end."""
    suffix = f".{extension}" if extension else ""
    room = limit - len(suffix)
    if len(stem) > room:
        body = stem[: len(stem) - len(keep)] if keep else stem
        stem = body[: max(1, room - len(keep))].rstrip("._-") + keep
    return stem + suffix
