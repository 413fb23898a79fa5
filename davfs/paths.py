"""Paths of the drive: the one gate every path passes, from WebDAV and from the command
line, before anything looks it up."""

from __future__ import annotations

import re

from davfs.errors import BadPath

MAX_NAME_BYTES = 255
"""Longest name in UTF-8 bytes: what Linux, macOS and Windows file systems hold, so every
client can keep a local copy of every file."""
_FORBIDDEN_IN_NAMES = re.compile(r"[\x00-\x1f\x7f\\]")
"""Control characters, and backslashes, which Windows reads as a path separator."""


def split_path(path: str) -> list[str]:
    """A path → its name segments.

    Rejects ``.`` and ``..`` (no client may use them as names), control characters and
    backslashes, and names longer than :data:`MAX_NAME_BYTES`."""
    segments = [s for s in path.split("/") if s]
    for segment in segments:
        if segment in (".", "..") or _FORBIDDEN_IN_NAMES.search(segment):
            raise BadPath(repr(path), f"the name {segment!r} is not allowed")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise BadPath(repr(path)[:80], f"a name may be at most {MAX_NAME_BYTES} bytes long")
    return segments


def join(segments: list[str]) -> str:
    return "/" + "/".join(segments)
