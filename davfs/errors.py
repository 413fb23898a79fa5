"""Every error davfs raises on purpose.

A class's docstring is its user message (``{}`` placeholders are filled from the
constructor's arguments), so the text a user reads lives next to the condition that
produces it. ``exit_code`` is what the CLI exits with, one per class (listed in the
README; 0 is success, 1 "problems found" from fsck and gc, 74 an operating-system
error, 130 an interrupt); ``http_status`` is what the
provider answers when the error reaches WebDAV (the translation happens in one place,
``davfs.provider``; nothing below it knows HTTP).

    DavfsError
    ├── ConfigError                 bad wsgidav.yaml / DAVFS_* value
    ├── CatalogError
    │   ├── BadPath                  "..", ".", NUL in a path
    │   ├── NotFound                 path does not exist
    │   ├── AlreadyExists            name taken in that folder
    │   ├── NotAFolder               parent is a file
    │   ├── NotAFile                 a folder where a file was expected
    │   ├── FolderNotEmpty
    │   ├── NotAllowed               e.g. deleting the root folder
    │   ├── TooManyProperties        PROPPATCH beyond the dead properties a node may hold
    │   ├── CaseTwin                 a new name differs from a sibling's only in case
    │   └── PreconditionFailed       the file changed since the client checked
    ├── StoreError                   a chunk store failed
    │   ├── ChunkMissing             store has no such chunk
    │   ├── StoreFull                no space left (507)
    │   └── StoreUnavailable         transient; retry later (503)
    │       ├── StagingFull          write-back is over its limit, waiting for the store
    │       ├── StoreTimeout         no answer in time
    │       └── ChunkCollected       gc deleted a chunk an upload had just stored
    ├── IntegrityError               bytes from the store failed their BlockHash
    │   └── DamagedFile              fsck --repair marked a chunk of the file unreadable
    └── UploadError
        └── IncompleteUpload         body shorter/longer than Content-Length
"""

from __future__ import annotations


class DavfsError(Exception):
    """An error in davfs."""

    exit_code = 2
    http_status = 500

    def __str__(self) -> str:
        template = (type(self).__doc__ or "").strip().splitlines()[0]
        try:
            return template.format(*self.args)
        except (IndexError, KeyError):
            return f"{template} {self.args!r}"


class ConfigError(DavfsError):
    """Bad configuration: {}: {}"""

    exit_code = 78


class CatalogError(DavfsError):
    """Catalog error: {}"""

    exit_code = 10


class BadPath(CatalogError):
    """{} is not a valid path: {}"""

    exit_code = 11
    http_status = 400


class NotFound(CatalogError):
    """{} does not exist."""

    exit_code = 12
    http_status = 404


class AlreadyExists(CatalogError):
    """{} already exists."""

    exit_code = 13
    http_status = 405


class NotAFolder(CatalogError):
    """{} is not a folder."""

    exit_code = 14
    http_status = 409


class NotAFile(CatalogError):
    """{} is not a file."""

    exit_code = 15
    http_status = 409


class FolderNotEmpty(CatalogError):
    """Folder {} is not empty."""

    exit_code = 16
    http_status = 409


class NotAllowed(CatalogError):
    """{} is not allowed."""

    exit_code = 17
    http_status = 403


class TooManyProperties(CatalogError):
    """A file or folder holds at most {} dead properties; nothing was changed."""

    exit_code = 19
    http_status = 507


class CaseTwin(CatalogError):
    """{} differs only in case from {}, which Windows cannot tell apart; choose another name (davfs.windows_names: false allows it)."""

    exit_code = 20
    http_status = 409


class PreconditionFailed(CatalogError):
    """{} changed while it was being uploaded; nothing was written."""

    exit_code = 18
    http_status = 412


class StoreError(DavfsError):
    """Chunk store {} failed: {}"""

    exit_code = 30
    http_status = 502


class ChunkMissing(StoreError):
    """Chunk {} is missing from store {}; files that use it cannot be read."""

    exit_code = 31
    http_status = 500


class StoreFull(StoreError):
    """Chunk store {} has no space left ({}); free some space or move the store."""

    exit_code = 32
    http_status = 507


class StoreUnavailable(StoreError):
    """Chunk store {} is unavailable for {} s; try again later."""

    exit_code = 33
    http_status = 503

    @property
    def retry_after(self) -> int:
        """Seconds the client should wait (the HTTP ``Retry-After``)."""
        try:
            return max(1, int(self.args[1]))
        except (IndexError, TypeError, ValueError):
            return 30


class StagingFull(StoreUnavailable):
    """The staging area holds {} bytes, its limit is {}; the store is behind. Try again in a minute."""

    exit_code = 36

    @property
    def retry_after(self) -> int:
        return 60


class StoreTimeout(StoreUnavailable):
    """Chunk store {} did not answer within {} s; try again later."""

    exit_code = 34


class ChunkCollected(StoreUnavailable):
    """Chunk {} was being collected by gc while this upload stored it; upload again."""

    exit_code = 35

    @property
    def retry_after(self) -> int:
        return 1


class IntegrityError(DavfsError):
    """Block {} of chunk {} failed verification (expected BlockHash {}, got {}); the stored bytes are damaged."""

    exit_code = 40
    http_status = 500


class DamagedFile(IntegrityError):
    """{} is damaged ({}); `davfs fsck --verify --repair` found it unreadable. Upload it again to heal it."""

    exit_code = 41


class UploadError(DavfsError):
    """Upload of {} failed: {}"""

    exit_code = 50
    http_status = 500


class IncompleteUpload(UploadError):
    """Upload of {} received {} bytes but {} were announced; nothing was changed."""

    exit_code = 51
    http_status = 400


class ImportFailed(DavfsError):
    """Import from {}: {}"""

    exit_code = 60
    http_status = 400


class WrongPassphrase(DavfsError):
    """Cannot open the drive's key: {}"""

    exit_code = 61

    def __init__(self, why: str = "the passphrase is not this drive's (DAVFS_PASSPHRASE)") -> None:
        super().__init__(why)
