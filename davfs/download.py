"""GET and HEAD of a file, answered by davfs rather than wsgidav: conditional requests,
ranges and the response body, parsed and decided once.

- Conditions follow RFC 9110 13.2.2: If-Match, then If-Unmodified-Since, then
  If-None-Match (a match answers 304, and decides alone), then If-Modified-Since.
  A 304 carries the ETag and Last-Modified clients keep, and the Content-Length of
  the representation (wsgidav's had none, was logged as an error and closed the
  connection).
- Ranges: one range is a 206 with Content-Range; several are one
  ``multipart/byteranges`` 206 (what download managers and PDF viewers ask for); more
  than :data:`MAX_RANGES`, or ranges that would cost more than the file, are answered
  with the whole file (RFC 9110 allows ignoring Range). An If-Range that no longer
  holds gets the whole file. An empty file ignores Range (nothing to cut).
- The body is a :class:`~davfs.reader.ChunkReader` from :meth:`Drive.open_read`, which
  has fetched and verified the first block before the status line goes out
  (invariant 2). The body iterator holds that reader and plain values only
  (invariant 1: wsgidav iterates it after the request handler returned).
- Browsers show what is safe to show (pictures, PDF, audio, video, plain text) and
  download the rest (``Content-Disposition: attachment``), so an uploaded HTML page
  never runs as davfs's own page. Names go in ``filename*`` (RFC 6266), non-ASCII too.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from wsgidav import util

from davfs.catalog import Node
from davfs.drive import Drive
from davfs.reader import ChunkReader

MAX_RANGES = 32
"""Ranges served as asked; a request for more gets the whole file (RFC 9110 14.2
lets a server ignore a Range it finds too costly)."""
PIECE = 1024 * 1024
"""Bytes per body piece: one verified block, handed out uncopied."""
_INLINE_TYPES = ("image/", "audio/", "video/", "text/plain", "application/pdf")
_NEVER_INLINE = ("image/svg+xml",)  # SVG runs scripts


@dataclass(frozen=True, slots=True)
class Answer:
    """The status and headers decided for a GET/HEAD, and what the body holds."""

    status: str
    headers: list[tuple[str, str]]
    ranges: tuple[tuple[int, int], ...] = ()
    """[start, end) byte ranges to send, in order; empty for no body."""
    multipart: tuple[bytes, bytes] | None = None
    """(part header template, closing line) for multipart/byteranges."""


def decide(node: Node, name: str, environ: dict[str, Any]) -> Answer:
    """What to answer a GET or HEAD of ``node`` (a file), from its request headers."""
    assert node.etag is not None
    etag, modified, size = node.etag, int(node.modified), node.size
    head = [
        ("ETag", f'"{etag}"'),
        ("Last-Modified", util.get_rfc1123_time(node.modified)),
        ("Date", util.get_rfc1123_time()),
    ]
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            return _failed(head)
    elif (since := _date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))) is not None and modified > since:
        return _failed(head)
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            return Answer("304 Not Modified", [*head, ("Content-Length", str(size))])
    elif (since := _date(environ.get("HTTP_IF_MODIFIED_SINCE"))) is not None and modified <= since:
        return Answer("304 Not Modified", [*head, ("Content-Length", str(size))])
    content_type = str(util.guess_mime_type(name))
    head += [
        ("Accept-Ranges", "bytes"),
        ("Content-Disposition", content_disposition(name, content_type)),
        ("X-Content-Type-Options", "nosniff"),
    ]
    wanted = _wanted_ranges(environ, etag, modified, size)
    if wanted is None:
        return Answer(
            "200 OK", [*head, ("Content-Type", content_type), ("Content-Length", str(size))], ((0, size),)
        )
    ranges = tuple(wanted)
    if not ranges:
        return Answer(
            "416 Range Not Satisfiable",
            [
                *head,
                ("Content-Range", f"bytes */{size}"),
                ("Content-Type", "text/plain"),
                ("Content-Length", "0"),
            ],
        )
    if len(ranges) == 1:
        start, end = ranges[0]
        return Answer(
            "206 Partial Content",
            [
                *head,
                ("Content-Type", content_type),
                ("Content-Range", f"bytes {start}-{end - 1}/{size}"),
                ("Content-Length", str(end - start)),
            ],
            ranges,
        )
    boundary = secrets.token_hex(16)
    part = f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes %d-%d/{size}\r\n\r\n"
    closing = f"\r\n--{boundary}--\r\n".encode()
    length = sum(len((part % (s, e - 1)).encode()) + e - s for s, e in ranges) + len(closing)
    return Answer(
        "206 Partial Content",
        [
            *head,
            ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
            ("Content-Length", str(length)),
        ],
        ranges,
        (part.encode(), closing),
    )


def serve(
    drive: Drive, node: Node, path: str, environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """Answer a GET or HEAD of a file; errors before the first byte raise (the caller
    turns davfs errors into statuses)."""
    answer = decide(node, path.rstrip("/").rsplit("/", 1)[-1], environ)
    if environ["REQUEST_METHOD"] == "HEAD" or not answer.ranges or answer.status.startswith("304"):
        start_response(answer.status, answer.headers)
        return [b""]
    first, last = answer.ranges[0][0], answer.ranges[-1][1]
    reader = drive.open_read(path, node=node, start=first, end=last if len(answer.ranges) == 1 else None)
    start_response(answer.status, answer.headers)
    return _Body(reader, answer.ranges, answer.multipart)


class _Body:
    """The response body: the ranges of one file version, read from a primed reader.
    Holds nothing request-scoped (invariant 1)."""

    def __init__(
        self, reader: ChunkReader, ranges: tuple[tuple[int, int], ...], multipart: tuple[bytes, bytes] | None
    ) -> None:
        self._reader = reader
        self._ranges = ranges
        self._multipart = multipart

    def __iter__(self) -> Iterator[bytes]:
        reader = self._reader
        for start, end in self._ranges:
            if self._multipart is not None:
                yield self._multipart[0] % (start, end - 1)
            reader.seek(start)
            remaining = end - start
            while remaining > 0:
                piece = reader.read(min(PIECE, remaining))
                if not piece:
                    raise OSError("the file ended early")  # cannot happen: sizes come from one snapshot
                remaining -= len(piece)
                yield piece
        if self._multipart is not None:
            yield self._multipart[1]

    def close(self) -> None:
        self._reader.close()


def content_disposition(name: str, content_type: str = "application/octet-stream") -> str:
    """``inline`` for what a browser may safely show, ``attachment`` for the rest."""
    inline = content_type.startswith(_INLINE_TYPES) and content_type not in _NEVER_INLINE
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\%' else "_" for c in name)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _failed(head: list[tuple[str, str]]) -> Answer:
    return Answer("412 Precondition Failed", [*head, ("Content-Type", "text/plain"), ("Content-Length", "0")])


def _etag_matches(header: str, etag: str) -> bool:
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
    return "*" in tags or etag in tags


def _date(header: str | None) -> int | None:
    if header is None:
        return None
    seconds = util.parse_time_string(header)
    return int(seconds) if seconds else None


def _wanted_ranges(
    environ: dict[str, Any], etag: str, modified: int, size: int
) -> list[tuple[int, int]] | None:
    """The [start, end) ranges to send, merged and in order; [] when none can be
    satisfied; None for the whole file (no Range, an If-Range that no longer holds, a
    Range this server ignores)."""
    header = environ.get("HTTP_RANGE")
    if header is None or size == 0 or not _if_range_holds(environ.get("HTTP_IF_RANGE"), etag, modified):
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    wanted: list[tuple[int, int]] = []
    for number, spec in enumerate(specs.split(",")):
        if number >= MAX_RANGES:
            return None
        first, dash, last = spec.strip().partition("-")
        if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
            return None  # malformed: ignored, as RFC 9110 says
        if not first:
            if not last:
                return None
            start, end = max(0, size - int(last)), size  # a suffix: the last N bytes
            if int(last) == 0:
                continue
        else:
            start = int(first)
            end = size if not last else min(size, int(last) + 1)
            if last and int(last) < start:
                return None
        if start < size:
            wanted.append((start, end))
    wanted.sort()
    merged: list[tuple[int, int]] = []
    for start, end in wanted:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    if sum(end - start for start, end in merged) >= size and len(merged) > 1:
        return None  # asking for more than the whole file in pieces
    return merged


def _if_range_holds(condition: str | None, etag: str, modified: int) -> bool:
    """If-Range: a date must equal Last-Modified, an ETag must be the (strong) ETag."""
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith(('"', "W/")):
        return not condition.startswith("W/") and condition.strip('"') == etag
    return _date(condition) == modified
