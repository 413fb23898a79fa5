"""The wsgidav provider: DAV paths and methods → :class:`~davfs.drive.Drive` calls.

Thin on purpose: every decision about data lives in the Drive and below; this module
translates. Its calls into the Drive go through
:func:`~davfs.http_policy.dav_errors`, where davfs errors get their HTTP statuses.

wsgidav quirks handled here (see ``shared/notes/wsgidav-telethon-memo.md``):

- PUT calls ``create_empty_resource`` before the body arrives. For PUT we return an
  uncommitted file object; the file appears only when the writer commits (invariant 3).
  LOCK on an unmapped URL does create a 0-byte file, as RFC 4918 and clients expect.
- wsgidav accepts a body shorter than Content-Length as complete; the writer counts.
- ``X-OC-Mtime`` goes into the upload's commit, so a PUT is one catalog transaction
  (wsgidav would set it afterwards, in a second one).
- GET and HEAD of files are answered by :mod:`davfs.download`; folder listings
  (PROPFIND Depth 1) by :mod:`davfs.listing`.
- Dead properties live in the catalog next to their node, so MOVE keeps them for free,
  COPY copies them in the same transaction, DELETE drops them in the same transaction.
- ``getetag`` is returned quoted, exactly like the ``ETag`` header.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

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

from davfs import download, listing
from davfs.catalog import ABSENT, Node
from davfs.drive import Drive
from davfs.errors import NotAFolder, NotFound
from davfs.http_policy import LATEST_TIMESTAMP, dav_errors, facts_of
from davfs.reader import ChunkReader
from davfs.writer import ChunkWriter

log = logging.getLogger(__name__)

_MS_NAMESPACE = "{urn:schemas-microsoft-com:}"
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


class DavfsProvider(DAVProvider):  # type: ignore[misc]
    """Serves one Drive as a WebDAV share."""

    def __init__(self, drive: Drive, *, propfind_infinity: bool = False) -> None:
        super().__init__()
        self.drive = drive
        self.propfind_infinity = propfind_infinity

    def __repr__(self) -> str:
        return f"DavfsProvider({self.drive.catalog.url!r}, {self.drive.store.properties.name})"

    def is_readonly(self) -> bool:
        return False

    def custom_request_handler(
        self, environ: dict[str, Any], start_response: Callable[..., Any], default_handler: Callable[..., Any]
    ) -> Any:
        """The requests davfs answers itself; the rest go to wsgidav."""
        method = environ["REQUEST_METHOD"]
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
        if (
            method in ("GET", "HEAD")
            and "HTTP_IF" not in environ
            and environ.get("CONTENT_LENGTH", "") in ("", "0")
        ):
            resource = self.get_resource_inst(environ["PATH_INFO"], environ)
            if isinstance(resource, DavfsFile) and resource.node is not None:
                with dav_errors():
                    return download.serve(self.drive, resource.node, resource.path, environ, start_response)
        return default_handler(environ, start_response)

    def get_resource_inst(self, path: str | None, environ: dict[str, Any]) -> DavfsFolder | DavfsFile | None:
        if path is None:
            return None  # wsgidav asks for the parent of "/"
        # wsgidav resolves the same path several times per request (middleware, handler).
        memo: dict[str, Node | None] = (
            environ.setdefault("davfs.resolved", {}) if environ.get("REQUEST_METHOD") in _MEMO_METHODS else {}
        )
        if path not in memo:
            with dav_errors():
                memo[path] = self.drive.resolve(path)
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


MAX_PATCHED_PROPS = 1000
"""Properties one PROPPATCH may set or remove."""


@dataclasses.dataclass
class _Patch:
    """The changes of one PROPPATCH, recorded in its dry run."""

    props: dict[str, str | None] = dataclasses.field(default_factory=dict)
    mtime: float | None = None
    applied: bool = False
    error: DAVError | None = None


class _NodeResource:
    """What folders and files share: live props from the node, dead props from the catalog."""

    provider: DavfsProvider
    environ: dict[str, Any]
    path: str
    name: str

    def _init_node(self, node: Node | None, dead_props: dict[str, str] | None) -> None:
        self.node = node
        self._dead_props = dead_props
        self._pending_patch: _Patch | None = None

    @property
    def drive(self) -> Drive:
        return self.provider.drive

    def _dead(self) -> dict[str, str]:
        if self._dead_props is None:
            self._dead_props = {} if self.node is None else self.drive.dead_props(self.node.id)
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
        """PROPPATCH, all or nothing in one transaction (RFC 4918 9.2). wsgidav asks for
        every property twice: first as a dry run, which here checks and records each
        change, then for real, which here writes all recorded changes at the first
        call; a failure fails every property."""
        if not dry_run:
            self._apply_patch()
            return True
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        if name.startswith("{DAV:}") or (name.startswith(_MS_NAMESPACE) and self._win32_emulated()):
            # getlastmodified and Win32LastModifiedTime reach set_last_modified; wsgidav
            # accepts the other Win32 properties without keeping them.
            return super().set_property_value(name, value, dry_run=True)  # type: ignore[misc]
        patch = self._patch()
        if len(patch.props) >= MAX_PATCHED_PROPS:
            raise DAVError(
                HTTP_BAD_REQUEST, context_info=f"at most {MAX_PATCHED_PROPS} properties per PROPPATCH"
            )
        patch.props[name] = None if value is None else etree.tostring(value).decode("utf-8")
        return True

    def _patch(self) -> _Patch:
        if self._pending_patch is None:
            self._pending_patch = _Patch()
        return self._pending_patch

    def _apply_patch(self) -> None:
        patch = self._patch()
        if patch.error is not None:
            raise patch.error
        if patch.applied:
            return
        patch.applied = True
        node = self._require_node()
        try:
            with dav_errors():
                self.drive.patch(node.id, patch.props, patch.mtime)
        except DAVError as exc:
            patch.error = exc
            raise
        self._dead_props = None
        if patch.mtime is not None:
            self.node = dataclasses.replace(node, modified=patch.mtime)

    def _win32_emulated(self) -> bool:
        hotfixes = self.environ["wsgidav.config"].get("hotfixes") or {}
        agent = self.environ.get("HTTP_USER_AGENT", "")
        return bool(hotfixes.get("emulate_win32_lastmod")) and "MiniRedir/6.1" not in agent

    def remove_all_properties(self, *, recursive: bool) -> None:
        """Dead properties are dropped with their node, in the same transaction."""

    def set_last_modified(self, dest_path: str, time_stamp: str | int, *, dry_run: bool) -> bool:
        """Reached from PROPPATCH's dry run (see :meth:`set_property_value`)."""
        seconds = time_stamp if isinstance(time_stamp, int) else util.parse_time_string(time_stamp)
        if seconds is None or not 0 <= seconds <= LATEST_TIMESTAMP:
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"bad date {time_stamp!r}")
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        self._patch().mtime = float(seconds)
        if not dry_run:
            self._apply_patch()
        return True

    # --- tree changes shared by files and folders ----------------------------------

    def _require_node(self) -> Node:
        if self.node is None:
            raise DAVError(HTTP_NOT_FOUND)
        return self.node

    def _dest_parent(self, dest_path: str) -> tuple[Node, str]:
        if not dest_path.strip("/"):
            raise DAVError(HTTP_FORBIDDEN, context_info="cannot replace the root folder")
        with dav_errors():
            try:
                return self.drive.parent_of(dest_path)
            except (NotFound, NotAFolder):
                raise DAVError(HTTP_CONFLICT, context_info="destination parent must be a folder") from None

    def delete(self) -> None:
        """Called by wsgidav in two ways. DELETE reaches it only member by member,
        children first, when :meth:`handle_delete` declined (something below is locked
        or conditional); wsgidav does not reliably skip the parents of a member that
        failed, so here a folder that still has members is refused. MOVE and COPY call
        it to clear a destination, after checking the whole tree for locks, and expect
        the whole tree to go."""
        if self._replaced_by_copy_or_move():
            return  # its locks stay: the file that takes its place joins them (RFC 4918 7.7)
        node = self._require_node()
        method = self.environ.get("REQUEST_METHOD")
        recursive = method != "DELETE"
        # A member-by-member MOVE deletes each source after copying it: not a deletion
        # anyone made, so not one for the trash (clearing its destination is).
        destination = (facts_of(self.environ).destination or "").rstrip("/")
        path = self.path.rstrip("/")
        moved_away = method == "MOVE" and not (path == destination or path.startswith(destination + "/"))
        with dav_errors():
            self.drive.delete(node, self.path, recursive=recursive, for_good=moved_away)
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
        if (facts_of(environ).destination or "").rstrip("/") != self.path.rstrip("/"):
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
        with dav_errors():
            self.drive.delete(node, self.path, recursive=True)
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]
        return True

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """COPY one node, or one step of wsgidav's member-by-member MOVE, which deletes
        the source afterwards: both copy (chunks are shared, so this is cheap)."""
        node = self._require_node()
        parent, name = self._dest_parent(dest_path)
        with dav_errors():
            self.drive.copy(node.id, parent.id, name)

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list[Any]:
        node = self._require_node()
        parent, name = self._dest_parent(dest_path)
        with dav_errors():
            self.drive.move(node.id, parent.id, name)
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
            with dav_errors():
                self._members = self.drive.children(self.folder.id)
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
        with dav_errors():
            props = self.drive.children_dead_props(self.folder.id) if children else {}
        return [
            self.provider.resource_for(util.join_uri(self.path, c.name), c, self.environ, props.get(c.id, {}))
            for c in children
        ]

    def get_used_bytes(self) -> int | None:
        return self.drive.quota()[0]

    def get_available_bytes(self) -> int | None:
        return self.drive.quota()[1]

    def create_empty_resource(self, name: str) -> DavfsFile:
        path = util.join_uri(self.path, name)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            # Nothing exists until the upload commits (invariant 3).
            return DavfsFile(path, self.environ, None, {}, parent_id=self.folder.id)
        with dav_errors():
            node = self.drive.create_empty_file(self.folder.id, name)
        return DavfsFile(path, self.environ, node, {})

    def create_collection(self, name: str) -> DavfsFolder:
        with dav_errors():
            node = self.drive.mkdir(self.folder.id, name)
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

    def get_content(self) -> _ReadErrorsAsStatus:
        """The whole file, for the GETs wsgidav answers (those with an ``If`` header)."""
        with dav_errors():
            return _ReadErrorsAsStatus(self.drive.open_read(self.path, node=self._require_node()))

    def begin_write(self, *, content_type: str | None = None) -> _UploadStream:
        assert self._parent_id is not None
        facts = facts_of(self.environ)
        self._writer = self.drive.open_write(
            self._parent_id,
            self.path.rstrip("/").rsplit("/", 1)[-1],
            path=self.path,
            size=facts.expected_size,
            mtime=facts.mtime,
            expect_version=self._expected_version(),
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
    a read before the first byte has gone out then becomes its own status, such as 503
    with Retry-After, instead of wsgidav's generic 500; later it can only cut the
    response short."""

    def __init__(self, reader: ChunkReader) -> None:
        self._reader = reader

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._reader.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        with dav_errors():
            return self._reader.read(size)

    def close(self) -> None:
        self._reader.close()


class _UploadStream:
    """What wsgidav writes the PUT body into; maps writer errors to HTTP statuses."""

    def __init__(self, writer: ChunkWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        with dav_errors():
            return self._writer.write(data)

    def close(self) -> None:
        with dav_errors():
            self._writer.close()
