"""Paths of the drive: the one gate every path passes, from WebDAV and from the command
line, before anything looks it up."""

from __future__ import annotations

import re

from davfs.errors import BadPath

MAX_NAME_BYTES = 255
"""Longest name in UTF-8 bytes: what Linux, macOS and Windows file systems hold, so every
client can keep a local copy of every file."""
MAX_DEPTH = 200
"""Folders a path may nest: far beyond any real tree, and short of what wsgidav's
recursive walks (COPY, MOVE, listings) can take."""
_FORBIDDEN_IN_NAMES = re.compile("[\x00-\x1f\x7f\\\\\ud800-\udfff\ufffe\uffff]")
"""Control characters and backslashes (Windows reads ``\\`` as a path separator), and
what XML 1.0 cannot carry (lone surrogates, U+FFFE, U+FFFF): one such name would make
every listing of its folder invalid XML for every client."""
_WINDOWS_RESERVED = re.compile(r"(?i)(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?")
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')


def split_path(path: str) -> list[str]:
    """A path → its name segments.

    Rejects ``.`` and ``..`` (no client may use them as names), the characters above,
    names longer than :data:`MAX_NAME_BYTES` and paths deeper than :data:`MAX_DEPTH`."""
    segments = [s for s in path.split("/") if s]
    if len(segments) > MAX_DEPTH:
        raise BadPath(repr(path)[:80] + "…", f"a path may nest at most {MAX_DEPTH} folders")
    for segment in segments:
        if segment in (".", "..") or _FORBIDDEN_IN_NAMES.search(segment):
            raise BadPath(repr(path)[:200], f"the name {segment[:80]!r} is not allowed")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise BadPath(repr(path)[:80], f"a name may be at most {MAX_NAME_BYTES} bytes long")
    return segments


def windows_problem(name: str) -> str | None:
    """Why Windows could not open a file or folder of this name, if it could not: a
    trailing dot or space, a device name (``CON``, ``NUL``, ``COM1``… with or without an
    extension), or one of ``<>:"|?*``."""
    if name.endswith((".", " ")):
        return "Windows cannot open a name that ends in a dot or a space"
    if _WINDOWS_RESERVED.fullmatch(name):
        return f"{name.split('.')[0]!r} is a device name on Windows"
    if _WINDOWS_FORBIDDEN.search(name):
        return 'Windows cannot open a name with any of <>:"|?*'
    return None


def join(segments: list[str]) -> str:
    return "/" + "/".join(segments)
