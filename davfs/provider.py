"""The wsgidav provider: DAV paths → catalog nodes, GET → ChunkReader, PUT → ChunkWriter.

Thin on purpose: every decision about data lives in the catalog, reader and writer; this
module translates. It is also the one place where davfs errors become HTTP statuses
(:func:`_dav_errors`).

wsgidav quirks handled here (see ``shared/notes/wsgidav-telethon-memo.md``):

- PUT calls ``create_empty_resource`` before the body arrives. For PUT we return an
  uncommitted file object; the file appears only when the writer commits (invariant 3).
  LOCK on an unmapped URL does create a 0-byte file, as RFC 4918 and clients expect.
- wsgidav accepts a body shorter than Content-Length as complete; the writer counts.
- The response body is iterated after the app returns: ``get_content`` takes the
  snapshot and fetches the first needed block now, and returns a reader that touches
  nothing request-scoped (invariant 1).
- Dead properties live in the catalog next to their node, so MOVE keeps them for free,
  COPY copies them in the same transaction, DELETE drops them in the same transaction.
- ``getetag`` is returned quoted, exactly like the ``ETag`` header.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote, urlparse

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.util import etree

from davfs import listing
from davfs.catalog import ABSENT, Catalog, Node, split_path
from davfs.errors import DamagedFile, DavfsError, IntegrityError, StoreUnavailable
from davfs.reader import ChunkReader
from davfs.stores.base import ChunkStore
from davfs.writer import ChunkWriter, UploadTarget

log = logging.getLogger(__name__)

_MS_NAMESPACE = "{urn:schemas-microsoft-com:}"
_LATEST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
_MEMO_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND", "PUT"})
"""Requests that may remember what a path resolved to for their own duration: they
change nothing, or (PUT) change only the one file, at the very end, conditionally on
the version they resolved."""
_CONDITIONAL_HEADERS = (
    "HTTP_IF",
    "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
)


@contextmanager
def _dav_errors() -> Iterator[None]:
    """Translate davfs errors into wsgidav's DAVError, the single place that knows HTTP."""
    try:
        yield
    except DAVError:
        raise
    except DavfsError as exc:
        if exc.http_status >= 500 and not isinstance(exc, IntegrityError):  # the reader logged it
            log.error("%s", exc)
        headers = [("Retry-After", str(exc.retry_after))] if isinstance(exc, StoreUnavailable) else None
        raise DAVError(exc.http_status, context_info=str(exc), add_headers=headers) from exc


class DavfsProvider(DAVProvider):  # type: ignore[misc]
    """Serves one catalog + chunk store as a WebDAV share."""

    def __init__(
        self,
        catalog: Catalog,
        store: ChunkStore,
        *,
        chunk_size: int,
        prefetch_blocks: int = 8,
        upload_in_flight: int = 2,
        io_threads: int = 16,
        available_bytes: Callable[[], int | None] | None = None,
        propfind_infinity: bool = False,
    ) -> None:
        super().__init__()
        self.catalog = catalog
        self.store = store
        self.chunk_size = chunk_size
        self.prefetch_blocks = prefetch_blocks
        self.upload_in_flight = upload_in_flight
        # Separate pools: downloads' read-ahead must not queue behind uploads' store
        # calls (an fsync here, a slow Telegram send later).
        self.read_executor = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="davfs-read")
        self.write_executor = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="davfs-write")
        self._available_bytes = available_bytes or (lambda: None)
        self.propfind_infinity = propfind_infinity
        self._quota_lock = threading.Lock()
        self._quota: tuple[float, int | None, int | None] = (0.0, None, None)

    def __repr__(self) -> str:
        return f"DavfsProvider({self.catalog.url!r}, {self.store.properties.name})"

    def is_readonly(self) -> bool:
        return False

    def custom_request_handler(
        self, environ: dict[str, Any], start_response: Callable[..., Any], default_handler: Callable[..., Any]
    ) -> Any:
        """Refuse, before wsgidav reads anything, what would cost unbounded work or memory."""
        method = environ["REQUEST_METHOD"]
        if (
            method == "PUT"
            and (mtime := environ.get("HTTP_X_OC_MTIME")) is not None
            and not _valid_timestamp(mtime)
        ):
            raise DAVError(HTTP_BAD_REQUEST, context_info="X-OC-Mtime must be seconds since 1970")
        if method in ("MOVE", "COPY") and not environ.get("HTTP_DESTINATION", "").strip():
            raise DAVError(HTTP_BAD_REQUEST, context_info="COPY and MOVE need a Destination header")
        if method == "LOCK":
            environ["HTTP_TIMEOUT"] = _bounded_lock_timeout(environ.get("HTTP_TIMEOUT", ""))
        if method in ("MOVE", "COPY") and _is_ancestor(
            environ.get("HTTP_DESTINATION", ""), environ["PATH_INFO"]
        ):
            # wsgidav refuses a destination inside the source, but would delete a
            # destination that contains the source (Overwrite: T) before moving it.
            raise DAVError(HTTP_FORBIDDEN, context_info="the destination contains the source")
        # A missing Depth means infinity for PROPFIND (RFC 4918 9.1); RFC 4918 lets a
        # server refuse it on collections.
        if (
            method == "PROPFIND"
            and environ.get("HTTP_DEPTH", "infinity").lower() == "infinity"
            and not self.propfind_infinity
        ):
            resource = self.get_resource_inst(environ["PATH_INFO"], environ)
            if resource is not None and resource.is_collection:
                raise DAVError(
                    HTTP_FORBIDDEN,
                    context_info="PROPFIND with Depth: infinity is disabled (davfs.propfind_infinity)",
                    err_condition=PRECONDITION_CODE_PropfindFiniteDepth,
                )
        if (
            method == "PROPFIND"
            and (listing_body := listing.answer(self, environ, start_response)) is not None
        ):
            return listing_body
        if method in ("GET", "HEAD") and (unchanged := self._not_modified(environ, start_response)):
            return unchanged
        return default_handler(environ, start_response)

    def _not_modified(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes] | None:
        """Answer a revalidation (davfs2, browsers) with 304 per RFC 9110 13.2.2, before
        wsgidav does: its 304 lacks the ETag clients keep, and it answers 412 when a
        matching If-None-Match comes with an If-Modified-Since later than the file's
        time (which Explorer's PROPPATCH of an older time makes common)."""
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if_modified_since = environ.get("HTTP_IF_MODIFIED_SINCE")
        if (if_none_match is None and if_modified_since is None) or "HTTP_IF_MATCH" in environ:
            return None
        resource = self.get_resource_inst(environ["PATH_INFO"], environ)
        if not isinstance(resource, DavfsFile) or resource.node is None:
            return None
        node = resource.node
        if if_none_match is not None:
            environ.pop("HTTP_IF_MODIFIED_SINCE", None)  # If-None-Match decides alone
            tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")}
            unchanged = "*" in tags or node.etag in tags
        else:
            since = util.parse_time_string(if_modified_since)
            unchanged = bool(since) and int(node.modified) <= since
        if not unchanged:
            return None
        start_response(
            "304 Not Modified",
            [
                ("ETag", f'"{node.etag}"'),
                ("Last-Modified", util.get_rfc1123_time(node.modified)),
                ("Date", util.get_rfc1123_time()),
            ],
        )
        return [b""]

    def get_resource_inst(self, path: str | None, environ: dict[str, Any]) -> DavfsFolder | DavfsFile | None:
        if path is None:
            return None  # wsgidav asks for the parent of "/"
        # wsgidav resolves the same path several times per request (middleware, handler).
        memo: dict[str, Node | None] = (
            environ.setdefault("davfs.resolved", {}) if environ.get("REQUEST_METHOD") in _MEMO_METHODS else {}
        )
        if path not in memo:
            with _dav_errors():
                memo[path] = self.catalog.resolve(split_path(path))
        node = memo[path]
        if node is None:
            return None
        return self.resource_for(path, node, environ)

    def resource_for(
        self, path: str, node: Node, environ: dict[str, Any], dead_props: dict[str, str] | None = None
    ) -> DavfsFolder | DavfsFile:
        if node.is_dir:
            return DavfsFolder(path, environ, node, dead_props)
        return DavfsFile(path, environ, node, dead_props)

    def quota(self) -> tuple[int | None, int | None]:
        """(used, available) bytes, cached for a second: Finder asks on every listing."""
        with self._quota_lock:
            stamp, used, available = self._quota
            if time.monotonic() - stamp > 1.0:
                used, available = self.catalog.used_bytes(), self._available_bytes()
                self._quota = (time.monotonic(), used, available)
            return used, available

    def shutdown(self) -> None:
        self.read_executor.shutdown(wait=False, cancel_futures=True)
        self.write_executor.shutdown(wait=False, cancel_futures=True)


def disk_free(path: str) -> Callable[[], int | None]:
    """Available bytes of the file system holding ``path`` (local store quota)."""

    def free() -> int | None:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None

    return free


class _NodeResource:
    """What folders and files share: live props from the node, dead props from the catalog."""

    provider: DavfsProvider
    environ: dict[str, Any]
    path: str
    name: str

    def _init_node(self, node: Node | None, dead_props: dict[str, str] | None) -> None:
        self.node = node
        self._dead_props = dead_props

    def _dead(self) -> dict[str, str]:
        if self._dead_props is None:
            self._dead_props = {} if self.node is None else self.provider.catalog.dead_props(self.node.id)
        return self._dead_props

    def get_creation_date(self) -> float | None:
        return self.node.created if self.node else None

    def get_last_modified(self) -> float | None:
        return self.node.modified if self.node else None

    def get_display_name(self) -> str:
        return self.name

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names: list[str] = super().get_property_names(is_allprop=is_allprop)  # type: ignore[misc]
        names.extend(self._dead())
        return names

    def get_property_value(self, name: str) -> Any:
        if name == "{DAV:}getetag":
            etag = self.get_etag()  # type: ignore[attr-defined]
            if etag is None:
                raise DAVError(HTTP_NOT_FOUND)
            return f'"{etag}"'
        if not name.startswith("{DAV:}"):
            value = self._dead().get(name)
            if value is None:
                raise DAVError(HTTP_NOT_FOUND)
            return xml_tools.string_to_xml(value)
        return super().get_property_value(name)  # type: ignore[misc]

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> Any:
        if name.startswith("{DAV:}"):
            return super().set_property_value(name, value, dry_run=dry_run)  # type: ignore[misc]
        if name.startswith(_MS_NAMESPACE) and self._win32_emulated():
            # wsgidav maps Win32LastModifiedTime onto set_last_modified; keep its answer.
            return super().set_property_value(name, value, dry_run=dry_run)  # type: ignore[misc]
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        if not dry_run:
            text = None if value is None else etree.tostring(value).decode("utf-8")
            with _dav_errors():
                self.provider.catalog.set_dead_prop(self.node.id, name, text)
            self._dead_props = None
        return True

    def _win32_emulated(self) -> bool:
        hotfixes = self.environ["wsgidav.config"].get("hotfixes") or {}
        agent = self.environ.get("HTTP_USER_AGENT", "")
        return bool(hotfixes.get("emulate_win32_lastmod")) and "MiniRedir/6.1" not in agent

    def remove_all_properties(self, *, recursive: bool) -> None:
        """Dead properties are dropped with their node, in the same transaction."""

    def set_last_modified(self, dest_path: str, time_stamp: str | int, *, dry_run: bool) -> bool:
        seconds = time_stamp if isinstance(time_stamp, int) else util.parse_time_string(time_stamp)
        if seconds is None or not _valid_timestamp(str(seconds)):
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"bad date {time_stamp!r}")
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        if not dry_run:
            with _dav_errors():
                self.provider.catalog.set_modified(self.node.id, float(seconds))
            self.node = dataclasses.replace(self.node, modified=float(seconds))
        return True

    # --- tree changes shared by files and folders ----------------------------------

    def _require_node(self) -> Node:
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        return self.node

    def _dest_parent(self, dest_path: str) -> tuple[Node, str]:
        with _dav_errors():
            segments = split_path(dest_path)
            if not segments:
                raise DAVError(HTTP_FORBIDDEN, context_info="cannot replace the root folder")
            parent = self.provider.catalog.resolve(segments[:-1])
        if parent is None or not parent.is_dir:
            raise DAVError(HTTP_CONFLICT, context_info="destination parent must be a folder")
        return parent, segments[-1]

    def delete(self) -> None:
        """Called by wsgidav in two ways. DELETE reaches it only member by member,
        children first, when :meth:`handle_delete` declined (something below is locked
        or conditional); wsgidav does not reliably skip the parents of a member that
        failed, so here a folder that still has members is refused. MOVE and COPY call
        it to clear a destination, after checking the whole tree for locks, and expect
        the whole tree to go."""
        if self._replaced_by_copy_or_move():
            self.remove_all_locks(recursive=False)  # type: ignore[attr-defined]
            return
        node = self._require_node()
        recursive = self.environ.get("REQUEST_METHOD") != "DELETE"
        with _dav_errors():
            self.provider.catalog.delete(node, recursive=recursive)
        self.remove_all_locks(recursive=recursive)  # type: ignore[attr-defined]

    def _replaced_by_copy_or_move(self) -> bool:
        """Whether this is a file a MOVE or COPY of a file is about to replace. wsgidav
        deletes the destination first, in a transaction of its own; a crash between that
        and the move would lose the file an editor saves by renaming over it. The
        catalog's move and copy replace a destination in their own transaction, so the
        delete is left to them."""
        environ = self.environ
        if environ.get("REQUEST_METHOD") not in ("COPY", "MOVE") or not isinstance(self, DavfsFile):
            return False
        target = unquote(urlparse(environ.get("HTTP_DESTINATION", "")).path).rstrip("/")
        if target != self.path.rstrip("/"):
            return False
        return isinstance(self.provider.get_resource_inst(environ["PATH_INFO"], environ), DavfsFile)

    def handle_delete(self) -> bool:
        """Delete a whole tree in one transaction when nothing below is locked and the
        request has no conditions to apply member by member; otherwise leave it to
        wsgidav's member-by-member path (``False``)."""
        node = self._require_node()
        if not node.is_dir:
            return False  # wsgidav checks the file's own lock, then calls delete()
        if any(header in self.environ for header in _CONDITIONAL_HEADERS):
            return False
        locks = self.provider.lock_manager
        if locks is not None:
            try:
                locks.check_write_permission(
                    url=self.get_ref_url(),  # type: ignore[attr-defined]
                    depth="infinity",
                    token_list=self.environ.get("wsgidav.ifLockTokenList", []),
                    principal=self.environ.get("wsgidav.user_name"),
                )
            except DAVError:
                return False
        with _dav_errors():
            self.provider.catalog.delete(node, recursive=True)
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]
        return True

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """COPY one node, or one step of wsgidav's member-by-member MOVE, which deletes
        the source afterwards: both copy (chunks are shared, so this is cheap)."""
        node = self._require_node()
        parent, name = self._dest_parent(dest_path)
        with _dav_errors():
            self.provider.catalog.copy_node(node.id, parent.id, name)

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list[Any]:
        node = self._require_node()
        parent, name = self._dest_parent(dest_path)
        with _dav_errors():
            self.provider.catalog.move(node.id, parent.id, name)
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]
        return []


class DavfsFolder(_NodeResource, DAVCollection):  # type: ignore[misc]
    """A folder node."""

    def __init__(
        self, path: str, environ: dict[str, Any], node: Node, dead_props: dict[str, str] | None = None
    ):
        DAVCollection.__init__(self, path, environ)
        self._init_node(node, dead_props)
        self._members: list[Node] | None = None

    @property
    def folder(self) -> Node:
        assert self.node is not None
        return self.node

    def _children(self) -> list[Node]:
        if self._members is None:
            with _dav_errors():
                self._members = self.provider.catalog.children(self.folder.id)
        return self._members

    def get_member_names(self) -> list[str]:
        return [child.name for child in self._children()]

    def get_member(self, name: str) -> DavfsFolder | DavfsFile | None:
        for child in self._children():
            if child.name == name:
                return self.provider.resource_for(util.join_uri(self.path, name), child, self.environ)
        return None

    def get_member_list(self) -> list[DavfsFolder | DavfsFile]:
        """All members from two queries (nodes, dead props) instead of two per member."""
        children = self._children()
        with _dav_errors():
            props = self.provider.catalog.children_dead_props(self.folder.id) if children else {}
        return [
            self.provider.resource_for(util.join_uri(self.path, c.name), c, self.environ, props.get(c.id, {}))
            for c in children
        ]

    def get_used_bytes(self) -> int | None:
        return self.provider.quota()[0]

    def get_available_bytes(self) -> int | None:
        return self.provider.quota()[1]

    def create_empty_resource(self, name: str) -> DavfsFile:
        path = util.join_uri(self.path, name)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            # Nothing exists until the upload commits (invariant 3).
            return DavfsFile(path, self.environ, None, {}, parent_id=self.folder.id)
        with _dav_errors():
            node = self.provider.catalog.create_empty_file(self.folder.id, name)
        return DavfsFile(path, self.environ, node, {})

    def create_collection(self, name: str) -> DavfsFolder:
        with _dav_errors():
            node = self.provider.catalog.mkdir(self.folder.id, name)
        return DavfsFolder(util.join_uri(self.path, name), self.environ, node, {})

    def support_recursive_delete(self) -> bool:
        return False  # trees are deleted by handle_delete


class DavfsFile(_NodeResource, DAVNonCollection):  # type: ignore[misc]
    """A file node, or (``node is None``) a PUT target that has not committed yet."""

    def __init__(
        self,
        path: str,
        environ: dict[str, Any],
        node: Node | None,
        dead_props: dict[str, str] | None = None,
        *,
        parent_id: int | None = None,
    ):
        DAVNonCollection.__init__(self, path, environ)
        self._init_node(node, dead_props)
        self._parent_id = parent_id if node is None else node.parent_id
        self._writer: ChunkWriter | None = None

    def get_content_length(self) -> int:
        return self.node.size if self.node else 0

    def get_content_type(self) -> str:
        return str(util.guess_mime_type(self.path))

    def get_etag(self) -> str | None:
        return self.node.etag if self.node else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def finalize_headers(self, environ: dict[str, Any], response_headers: list[tuple[str, str]]) -> None:
        """Name the download, so browsers and download managers save it under its own
        name, non-ASCII included (RFC 6266 ``filename*``, with an ASCII fallback)."""
        if environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            response_headers.append(("Content-Disposition", content_disposition(self.name)))

    def get_content(self) -> _ReadErrorsAsStatus:
        node = self._require_node()
        assert node.version_id is not None
        provider = self.provider
        with _dav_errors():
            snapshot = provider.catalog.snapshot(node.version_id, self.path)
            if snapshot.damaged:
                raise DamagedFile(self.path, snapshot.damaged)
            reader = ChunkReader(
                snapshot, provider.store, provider.read_executor, window=provider.prefetch_blocks
            )
            try:
                reader.prime(*self._response_range(snapshot.size))
            except BaseException:
                reader.close()
                raise
        return _ReadErrorsAsStatus(reader)

    def _response_range(self, size: int) -> tuple[int, int]:
        """[start, end) of what wsgidav will send, so the reader fetches only those blocks."""
        header = self.environ.get("HTTP_RANGE")
        if header and self._if_range_holds():
            ranges, _ = util.obtain_content_ranges(header, size)
            if ranges:
                start, last, _length = ranges[0]
                return int(start), int(last) + 1
        return 0, size

    def _if_range_holds(self) -> bool:
        """wsgidav's If-Range rule: a date must equal Last-Modified, else an ETag the ETag."""
        condition = self.environ.get("HTTP_IF_RANGE")
        if condition is None or self.node is None:
            return condition is None
        seconds = util.parse_time_string(condition)
        if seconds:
            return bool(int(self.node.modified) == seconds)
        return bool(condition.strip('" ') == self.node.etag)

    def begin_write(self, *, content_type: str | None = None) -> _UploadStream:
        assert self._parent_id is not None
        provider = self.provider
        self._writer = ChunkWriter(
            UploadTarget(
                self._parent_id,
                self.path.rstrip("/").rsplit("/", 1)[-1],
                self.path,
                expect_version=self._expected_version(),
            ),
            provider.catalog,
            provider.store,
            provider.write_executor,
            expected_size=_expected_size(self.environ),
            chunk_size=provider.chunk_size,
            in_flight=provider.upload_in_flight,
        )
        return _UploadStream(self._writer)

    def _expected_version(self) -> int | None:
        """wsgidav checked If-Match / If-None-Match: * before the body; re-check them at
        commit, so an upload cannot overwrite a change made while its body arrived."""
        if "HTTP_IF_MATCH" in self.environ and self.node is not None:
            return self.node.version_id
        if self.environ.get("HTTP_IF_NONE_MATCH", "").strip() == "*":
            return ABSENT
        return None

    def end_write(self, *, with_errors: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if with_errors:
            writer.abort()
        elif writer.node is not None:
            self.node = writer.node
            self._parent_id = writer.node.parent_id


class _ReadErrorsAsStatus:
    """The reader as wsgidav's GET loop uses it (seek, read, close). A store failure in
    a read before the first byte has gone out (the second block of a range that starts
    near the end of one) then becomes its own status, such as 503 with Retry-After,
    instead of wsgidav's generic 500; later it can only cut the response short."""

    def __init__(self, reader: ChunkReader) -> None:
        self._reader = reader

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._reader.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        with _dav_errors():
            return self._reader.read(size)

    def close(self) -> None:
        self._reader.close()


class _UploadStream:
    """What wsgidav writes the PUT body into; maps writer errors to HTTP statuses."""

    def __init__(self, writer: ChunkWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        with _dav_errors():
            return self._writer.write(data)

    def close(self) -> None:
        with _dav_errors():
            self._writer.close()


def content_disposition(name: str) -> str:
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _is_ancestor(destination: str, source: str) -> bool:
    """Whether the Destination URL names a folder above the source path."""
    if not destination:
        return False
    target = unquote(urlparse(destination).path).rstrip("/")
    return source.rstrip("/").startswith(target + "/")


LOCK_TIMEOUT_DEFAULT = 3600
"""Seconds a lock lasts when the client asks for Infinite or nothing (wsgidav: a week)."""
LOCK_TIMEOUT_MAX = 24 * 3600
"""Longest lock granted (wsgidav: four weeks): a client that crashed holding a lock must
not keep a file read-only for days. Clients that need longer refresh their locks."""


def _bounded_lock_timeout(header: str) -> str:
    """The Timeout header of a LOCK, held to :data:`LOCK_TIMEOUT_MAX`."""
    for choice in header.split(","):
        kind, _, seconds = choice.strip().partition("-")
        if kind.lower() == "second" and seconds.isascii() and seconds.isdigit() and len(seconds) < 16:
            return f"Second-{max(1, min(int(seconds), LOCK_TIMEOUT_MAX))}"
    return f"Second-{LOCK_TIMEOUT_DEFAULT}"


def _valid_timestamp(text: str) -> bool:
    """Seconds since 1970 that every client and Python's time functions can show."""
    return text.isascii() and text.isdigit() and int(text) <= _LATEST_TIMESTAMP


def _expected_size(environ: dict[str, Any]) -> int | None:
    """The size the client announced: Content-Length, or Finder's
    X-Expected-Entity-Length on a chunked upload."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        announced = environ.get("HTTP_X_EXPECTED_ENTITY_LENGTH", "")
    else:
        announced = environ.get("CONTENT_LENGTH", "")
    announced = announced.strip()
    if not announced:
        return None
    if not (announced.isascii() and announced.isdigit()):
        raise DAVError(HTTP_BAD_REQUEST, context_info=f"bad content length {announced!r}")
    return int(announced)
