"""The Telegram chunk store: every chunk is one document message in a private channel
(or in a user's Saved Messages), located by its message id.

Threading. telethon is asyncio and binds a client to the loop it connected on, so all
telethon calls run on one :class:`EventLoopThread`; cheroot's worker threads submit
coroutines to it and wait with a timeout. Nothing here uses ``telethon.sync``.

Speed. Telegram answers each request slowly (≈0.1-0.2 s) but many at once, so every
transfer keeps several requests in flight: an upload sends its 512 KiB parts in
parallel (telethon's ``upload_file`` sends them one by one), a read of several blocks
asks for them at once, and several accounts share the load round-robin. Each account
has a :class:`Pacer` that bounds its requests in flight and turns ``FLOOD_WAIT``
into a short sleep or, past the threshold, a 503 with ``Retry-After``.

Self-description (design invariant 6). A caption holds at most 1024 characters, far
too few for the BlockHashes of a large chunk, so the document is the chunk's bytes
followed by a *trailer*: the chunk's metadata as JSON. The caption names the format, the
ChunkHash, the chunk size and the trailer length, so recovery reads the trailer with
one small request per chunk. Reads never go past the chunk's own bytes.

Telegram's rules this module follows (``notes/telegram-limits.md``): upload parts of
512 KiB; at most 4000 parts (≈2000 MiB) per file; ``upload.getFile`` with offset and
limit multiples of 4 KiB, limit dividing 1 MiB, no request crossing a 1 MiB boundary;
at most 100 message ids per delete; file references expire and are refreshed by
fetching the message again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import itertools
import json
import logging
import os
import random
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from telethon import TelegramClient, errors, functions, types

from davfs.chunk import FORMAT_BLAKE3, FORMAT_SHA256, ChunkMeta
from davfs.errors import ChunkMissing, StoreError, StoreTimeout, StoreUnavailable
from davfs.stores.base import FOREIGN, StoreProperties

log = logging.getLogger(__name__)

T = TypeVar("T")
KiB = 1024
MiB = 1024 * KiB
PART_SIZE = 512 * KiB
"""Upload part size: Telegram's largest, so a chunk costs the fewest requests."""
MAX_PARTS = 4000
MAX_CHUNK_SIZE = 2000 * MiB - 1 * MiB
"""Telegram's per-file limit is 4000 parts of 512 KiB; 1 MiB stays free for the trailer."""
SMALL_FILE_LIMIT = 10 * MiB
"""Up to this size a file is uploaded with ``saveFilePart``, above it ``saveBigFilePart``."""
GETFILE_MAX = 1 * MiB
DELETE_BATCH = 100
DUPLICATE_PROBE = 20
"""How many message ids below a retried send are checked for a copy whose confirmation was lost."""

_CAPTION = re.compile(
    r"^davfs-chunk/(?:1 sha256|2 blake3)=(?P<hash>[0-9a-f]{64}) size=(?P<size>\d+) "
    r"trailer=(?P<trailer>\d+) nonce=(?P<nonce>[0-9a-f]{16})$"
)
_HASH_NAMES = {FORMAT_SHA256: "sha256", FORMAT_BLAKE3: "blake3"}

_RETRIABLE = (
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    errors.ServerError,
    errors.RpcCallFailError,
    errors.TimedOutError,
)
_FLOOD = (errors.FloodWaitError, errors.FloodPremiumWaitError)
_CALLER_HANDLES = (errors.FileReferenceExpiredError, errors.FilePartMissingError)
_SESSION_GONE = (errors.AuthKeyUnregisteredError, errors.SessionRevokedError, errors.AuthKeyDuplicatedError)
"""RPC errors the store's own code recovers from (refetch the message, upload again)."""


class EventLoopThread:
    """One asyncio loop on its own thread: the only place telethon code runs."""

    def __init__(self, name: str = "davfs-telegram") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("EventLoopThread.submit called from its own loop: it would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result."""
        return wait(self.submit(coro), timeout)

    def close(self) -> None:
        """Cancel what is still running (its waiters get CancelledError, not a timeout), then stop."""
        if self.loop.is_closed():
            return

        async def cancel_the_rest() -> None:
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

        try:
            self.run(cancel_the_rest(), timeout=10)
        except StoreUnavailable:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def wait(future: concurrent.futures.Future[T], timeout: float) -> T:
    """A loop future's result; a timeout cancels the work and is a StoreTimeout."""
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise StoreTimeout("telegram", int(timeout)) from None


@dataclass
class Account:
    """One signed-in Telegram client and the storage peer as *this* account sees it
    (channel access hashes are per account)."""

    name: str
    client: TelegramClient
    peer: Any
    is_bot: bool


class Pacer:
    """Calls Telegram for one account: at most ``parallelism`` requests in flight,
    flood waits up to ``flood_threshold`` seconds slept and retried, network errors
    retried with backoff, a bounded number of times. telethon's own flood sleeping is
    switched off (threshold 0) so that waits are decided here, in one place."""

    def __init__(self, parallelism: int, flood_threshold: int, retries: int) -> None:
        self._slots = asyncio.Semaphore(parallelism)
        self._flood_threshold = flood_threshold
        self._retries = retries

    async def call(
        self, what: str, attempt_once: Callable[[], Awaitable[T]], *, retry_network: bool = True
    ) -> T:
        """Flood waits and network failures each have their own budget of retries."""
        floods = failures = 0
        while True:
            try:
                async with self._slots:
                    return await attempt_once()
            except _FLOOD as exc:
                floods += 1
                if exc.seconds > self._flood_threshold or floods > self._retries:
                    log.warning("telegram asks to wait %d s before %s", exc.seconds, what)
                    raise StoreUnavailable("telegram", exc.seconds) from None
                await asyncio.sleep(exc.seconds)
            except _RETRIABLE as exc:
                failures += 1
                if not retry_network:
                    raise
                if failures > self._retries:
                    raise StoreError("telegram", f"{what} failed {failures} times: {exc!r}") from None
                await asyncio.sleep(min(0.25 * 2 ** (failures - 1), 8.0) * (0.5 + random.random()))
            except _CALLER_HANDLES:
                raise
            except _SESSION_GONE as exc:
                raise StoreError(
                    "telegram",
                    f"the Telegram session was revoked or expired ({exc.message}); run `davfs login`",
                ) from exc
            except errors.RPCError as exc:
                # Anything else Telegram refuses is not worth retrying; callers that
                # tell refusals apart (davfs login) find the RPC error as the cause.
                raise StoreError("telegram", f"{what}: Telegram refused it ({exc.message})") from exc


@dataclass(frozen=True)
class _Document:
    """What a read needs to know about a chunk's message, cached per account."""

    location: types.InputDocumentFileLocation
    dc_id: int
    chunk_size: int


class _DocumentBytes:
    """The bytes of a chunk's document (the chunk, then its trailer), by upload part."""

    def __init__(self, read: Callable[[int, int], bytes], size: int, trailer: bytes) -> None:
        self._read = read
        self._size = size
        self._trailer = trailer
        self.total = size + len(trailer)
        self.parts = -(-self.total // PART_SIZE)

    def part(self, index: int) -> bytes:
        start, stop = index * PART_SIZE, min(self.total, (index + 1) * PART_SIZE)
        head = self._read(start, min(stop, self._size)) if start < self._size else b""
        return head + self._trailer[max(0, start - self._size) : max(0, stop - self._size)]


def parse_caption(caption: str | None) -> tuple[str, int, int] | None:
    """(ChunkHash, chunk size, trailer length) of a davfs chunk message, else None."""
    match = _CAPTION.match(caption or "")
    if match is None:
        return None
    return match["hash"], int(match["size"]), int(match["trailer"])


def getfile_windows(offset: int, end: int) -> list[tuple[int, int]]:
    """The ``upload.getFile`` requests (offset, limit) that cover bytes [offset, end):
    the fewest that obey Telegram's alignment rules; a whole aligned 1 MiB block is
    one request."""
    windows: list[tuple[int, int]] = []
    position = offset
    while position < end:
        piece_end = min(end, (position // GETFILE_MAX + 1) * GETFILE_MAX)
        limit = 4 * KiB
        while position // limit != (piece_end - 1) // limit:
            limit *= 2
        start = position - position % limit
        windows.append((start, limit))
        position = start + limit
    return windows


@dataclass(frozen=True)
class ForeignDocument:
    """A document message davfs did not post."""

    message_id: int
    size: int
    name: str | None
    """Its file name, if it has one."""
    date: datetime.datetime

    @property
    def locator(self) -> str:
        return f"{FOREIGN}{self.message_id}"


class TelegramStore:
    """A ChunkStore over one or more Telegram accounts sharing one storage peer."""

    def __init__(
        self,
        accounts: Sequence[Account],
        loop: EventLoopThread,
        *,
        parallelism: int = 8,
        flood_threshold: int = 10,
        retries: int = 5,
        request_timeout: float = 120.0,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        spool_dir: str | None = None,
    ) -> None:
        if not accounts:
            raise StoreError("telegram", "no signed-in account; run `davfs login` first")
        self.properties = StoreProperties(
            "telegram",
            min(max_chunk_size, MAX_CHUNK_SIZE),
            concurrency=parallelism * len(accounts),
            spool_dir=spool_dir,
            content_addressed=False,
        )
        self._accounts = list(accounts)
        self._loop = loop
        self._parallelism = parallelism
        self._retries = retries
        self._timeout = request_timeout
        # asyncio primitives bind to the loop that first awaits them (Python ≥ 3.10),
        # so pacers can be built here and used on the loop thread.
        self._pacers = [Pacer(parallelism, flood_threshold, retries) for _ in self._accounts]
        self._turns = {work: itertools.cycle(range(len(self._accounts))) for work in ("put", "get")}
        self._next_lock = threading.Lock()
        self._documents: dict[tuple[int, int], _Document] = {}
        self._foreign: set[tuple[int, int]] = set()
        """(account, message id) of documents read at a FOREIGN locator."""
        for account in self._accounts:
            account.client.flood_sleep_threshold = 0

    # -- writing ---------------------------------------------------------------------

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        view = memoryview(data)
        return self._put(lambda start, stop: bytes(view[start:stop]), meta)

    def put_file(self, path: str, meta: ChunkMeta) -> str:
        try:
            with open(path, "rb") as spooled:
                fd = spooled.fileno()
                return self._put(lambda start, stop: os.pread(fd, stop - start, start), meta)
        except OSError as exc:
            raise StoreError("telegram", f"cannot read spooled chunk {path}: {exc.strerror}") from None
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _put(self, read: Callable[[int, int], bytes], meta: ChunkMeta) -> str:
        """Upload the document (chunk + trailer) in parallel parts, then send it.

        A send that fails on the network may have been stored anyway (its confirmation
        lost). Telegram consumes uploaded parts with a send, so a retry uploads them
        again; after a retried send, the messages just below the new one are checked
        for this put's nonce and such a copy is deleted, so it leaves no orphan."""
        if meta.size > self.properties.max_chunk_size:
            raise ValueError(f"chunk of {meta.size} bytes exceeds Telegram's limit")
        trailer = json.dumps(meta.to_dict(), separators=(",", ":")).encode()
        document = _DocumentBytes(read, meta.size, trailer)
        index = self._pick_account("put")
        account, pacer = self._accounts[index], self._pacers[index]
        nonce = secrets.token_hex(8)
        caption = (
            f"davfs-chunk/{meta.format} {_HASH_NAMES[meta.format]}={meta.chunk_hash} "
            f"size={meta.size} trailer={len(trailer)} nonce={nonce}"
        )
        for attempt in itertools.count():
            uploaded = self._upload_parts(account, pacer, document, f"{meta.chunk_hash[:16]}.chunk")
            try:
                message_id = self._loop.run(self._send(account, pacer, uploaded, caption), self._timeout)
            except (*_RETRIABLE, errors.FilePartMissingError, StoreTimeout) as exc:
                if attempt >= self._retries:
                    raise StoreError(
                        "telegram", f"sending a chunk failed {attempt + 1} times: {exc!r}"
                    ) from None
                log.info("sending a chunk failed (%r); uploading it again", exc)
                continue
            if attempt:
                try:
                    self._loop.run(self._delete_lost_copies(account, pacer, message_id, nonce), self._timeout)
                except StoreError as exc:  # the chunk is stored; a stray copy is gc's to find
                    log.warning("could not look for stray copies of message %d: %s", message_id, exc)
            return str(message_id)
        raise AssertionError("unreachable")

    def _upload_parts(self, account: Account, pacer: Pacer, document: _DocumentBytes, name: str) -> Any:
        """Upload every part, ``parallelism`` at a time; the parts are read here, on the
        caller's thread, so the event loop only ever waits on the network."""
        file_id = random.getrandbits(63)
        big = document.total > SMALL_FILE_LIMIT
        in_flight: deque[concurrent.futures.Future[None]] = deque()
        try:
            for number in range(document.parts):
                data = document.part(number)
                in_flight.append(
                    self._loop.submit(
                        self._save_part(account, pacer, file_id, number, document.parts, data, big)
                    )
                )
                while len(in_flight) >= self._parallelism:
                    wait(in_flight.popleft(), self._timeout)
            while in_flight:
                wait(in_flight.popleft(), self._timeout)
        finally:
            for future in in_flight:
                future.cancel()
        if big:
            return types.InputFileBig(file_id, document.parts, name)
        return types.InputFile(file_id, document.parts, name, "")

    async def _save_part(
        self, account: Account, pacer: Pacer, file_id: int, number: int, parts: int, data: bytes, big: bool
    ) -> None:
        request: Any = (
            functions.upload.SaveBigFilePartRequest(file_id, number, parts, data)
            if big
            else functions.upload.SaveFilePartRequest(file_id, number, data)
        )
        await pacer.call(f"upload part {number}", lambda: account.client(request))

    async def _send(self, account: Account, pacer: Pacer, uploaded: Any, caption: str) -> int:
        """One send (flood waits are still slept): a network failure is not retried
        here, because the uploaded parts may be gone with it."""
        message = await pacer.call(
            "send chunk",
            lambda: account.client.send_file(
                account.peer,
                uploaded,
                caption=caption,
                force_document=True,
                mime_type="application/octet-stream",
                parse_mode=None,
            ),
            retry_network=False,
        )
        return int(message.id)

    async def _delete_lost_copies(self, account: Account, pacer: Pacer, sent_id: int, nonce: str) -> None:
        ids = list(range(max(1, sent_id - DUPLICATE_PROBE), sent_id))
        if not ids:
            return
        found = await pacer.call(
            "look for lost sends", lambda: account.client.get_messages(account.peer, ids=ids)
        )
        copies = [m.id for m in found if m is not None and (m.message or "").endswith(f" nonce={nonce}")]
        if copies:
            log.info("deleting %d copies of a chunk whose send confirmation was lost", len(copies))
            await pacer.call(
                "delete lost copies", lambda: account.client.delete_messages(account.peer, copies)
            )

    # -- reading ---------------------------------------------------------------------

    def get(self, locator: str, offset: int, length: int) -> bytes:
        message_id = _message_id(locator)
        index = self._pick_account("get")
        foreign = locator.startswith(FOREIGN)
        return self._loop.run(self._get(index, message_id, offset, length, foreign), self._timeout)

    def document_size(self, locator: str) -> int:
        """The size of the document at a :data:`FOREIGN` locator (ChunkMissing if the
        message or its document is gone)."""
        index = self._pick_account("get")
        document = self._loop.run(self._document(index, _message_id(locator), foreign=True), self._timeout)
        return document.chunk_size

    async def _get(
        self, index: int, message_id: int, offset: int, length: int, foreign: bool = False
    ) -> bytes:
        document = await self._document(index, message_id, foreign=foreign)
        if offset < 0 or length < 0 or offset + length > document.chunk_size:
            raise ValueError(f"range {offset}+{length} outside chunk of {document.chunk_size} bytes")
        if length == 0:
            return b""
        result = await self._read_document_bytes(index, message_id, offset, length)
        if len(result) != length:
            raise StoreError("telegram", f"message {message_id} returned {len(result)} of {length} bytes")
        return result

    async def _get_window(self, index: int, message_id: int, start: int, limit: int) -> bytes:
        account, pacer = self._accounts[index], self._pacers[index]
        for refreshed in (False, True):
            foreign = (index, message_id) in self._foreign
            document = await self._document(index, message_id, refresh=refreshed, foreign=foreign)
            request = functions.upload.GetFileRequest(document.location, start, limit)
            try:
                result = await pacer.call(
                    f"read message {message_id}",
                    functools.partial(_call_in_dc, account.client, document.dc_id, request),
                )
            except errors.FileReferenceExpiredError:
                if refreshed:
                    raise ChunkMissing(str(message_id), "telegram") from None
                continue
            return bytes(result.bytes)
        raise AssertionError("unreachable")

    async def _document(
        self, index: int, message_id: int, *, refresh: bool = False, foreign: bool = False
    ) -> _Document:
        key = (index, message_id)
        if not refresh and key in self._documents:
            return self._documents[key]
        account, pacer = self._accounts[index], self._pacers[index]
        message = await pacer.call(
            f"fetch message {message_id}", lambda: account.client.get_messages(account.peer, ids=message_id)
        )
        parsed = parse_caption(getattr(message, "message", None))
        document = getattr(getattr(message, "media", None), "document", None)
        if document is None or (parsed is None and not foreign):
            self._documents.pop(key, None)
            raise ChunkMissing(str(message_id), "telegram")
        location = types.InputDocumentFileLocation(
            document.id, document.access_hash, document.file_reference, thumb_size=""
        )
        if foreign:
            self._foreign.add(key)
        size = parsed[1] if parsed is not None and not foreign else int(document.size)
        found = _Document(location, document.dc_id, size)
        self._documents[key] = found
        return found

    # -- housekeeping ----------------------------------------------------------------

    def delete(self, locator: str) -> None:
        self.delete_many([locator])

    def delete_many(self, locators: Sequence[str]) -> None:
        """Delete chunks in batches of at most 100 message ids (Telegram's limit). A
        message davfs did not post (a :data:`FOREIGN` locator) is never deleted: gc
        forgets the chunk, the message stays where its owner put it."""
        ids = [int(locator) for locator in locators if locator.isdigit()]
        account, pacer = self._accounts[0], self._pacers[0]
        for start in range(0, len(ids), DELETE_BATCH):
            batch = ids[start : start + DELETE_BATCH]
            self._loop.run(
                pacer.call(
                    "delete chunks", functools.partial(account.client.delete_messages, account.peer, batch)
                ),
                self._timeout,
            )
            for index in range(len(self._accounts)):
                for message_id in batch:
                    self._documents.pop((index, message_id), None)

    def exists(self, locator: str) -> bool:
        try:
            message_id = _message_id(locator)
            foreign = locator.startswith(FOREIGN)
            self._loop.run(
                self._document(self._pick_account("get"), message_id, refresh=True, foreign=foreign),
                self._timeout,
            )
        except ChunkMissing:
            return False
        return True

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]:
        """Every chunk message in the channel with its metadata, read from the trailers,
        a page of 100 messages at a time. Recovery has no client waiting on it, so any
        flood wait is slept through, however long. Needs a user account: Telegram does
        not let bots page through history."""
        index = self._user_account("listing the channel")
        account = self._accounts[index]
        for message in self._messages(index):
            parsed = parse_caption(message.message)
            if parsed is None or message.media is None:
                continue
            _, size, trailer_length = parsed
            trailer = self._patiently(
                functools.partial(self._read_document_bytes, index, message.id, size, trailer_length)
            )
            try:
                meta = ChunkMeta.from_dict(json.loads(trailer))
            except (ValueError, KeyError) as exc:
                log.warning(
                    "message %d in %s has a damaged trailer (%s); skipped", message.id, account.name, exc
                )
                continue
            yield str(message.id), meta

    def foreign_documents(self) -> Iterator[ForeignDocument]:
        """Every document in the channel that davfs did not post (no chunk caption):
        forwarded files, uploads from phones, another app's. Needs a user session."""
        for message in self._messages(self._user_account("listing the channel")):
            document = getattr(message.media, "document", None)
            if document is None or parse_caption(message.message) is not None:
                continue
            names = [
                a.file_name for a in document.attributes if isinstance(a, types.DocumentAttributeFilename)
            ]
            yield ForeignDocument(message.id, int(document.size), names[0] if names else None, message.date)

    def _messages(self, index: int) -> Iterator[Any]:
        """Every message of the channel, oldest first, fetched 100 at a time; flood
        waits are slept through (listing has no client waiting on it)."""
        after = 0
        while page := self._patiently(functools.partial(self._page_after, index, after)):
            yield from page
            after = max(message.id for message in page)

    async def _page_after(self, index: int, after: int) -> list[Any]:
        account, pacer = self._accounts[index], self._pacers[index]
        page = await pacer.call(
            "list the channel",
            lambda: account.client.get_messages(account.peer, limit=100, min_id=after, reverse=True),
        )
        return list(page or [])

    def file_hashes(self, locator: str, offset: int) -> list[tuple[int, int, bytes]]:
        """Telegram's own SHA-256 of consecutive ranges of a document from ``offset``
        (``upload.getFileHashes``): (offset, length, digest), as many as it gives."""
        index = self._pick_account("get")
        message_id = _message_id(locator)

        async def ask() -> list[tuple[int, int, bytes]]:
            account, pacer = self._accounts[index], self._pacers[index]
            document = await self._document(index, message_id, foreign=True)
            request = functions.upload.GetFileHashesRequest(document.location, offset)
            hashes = await pacer.call(
                f"file hashes of message {message_id}",
                functools.partial(_call_in_dc, account.client, document.dc_id, request),
            )
            return [(h.offset, h.limit, bytes(h.hash)) for h in hashes]

        return self._loop.run(ask(), self._timeout)

    def _user_account(self, work: str) -> int:
        users = [i for i, account in enumerate(self._accounts) if not account.is_bot]
        if not users:
            raise StoreError(
                "telegram", f"{work} needs a user session (bots cannot read history); run `davfs login`"
            )
        return users[0]

    def _patiently(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` on the loop, sleeping through flood waits of any length."""
        for _ in range(self._retries * 4):
            try:
                return self._loop.run(make(), self._timeout)
            except StoreUnavailable as exc:
                log.info("telegram asks to wait %d s; recovery waits", exc.retry_after)
                time.sleep(exc.retry_after)
        return self._loop.run(make(), self._timeout)

    async def _read_document_bytes(self, index: int, message_id: int, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a message's document (chunk or trailer), its
        getFile windows fetched at once; shorter only if the document ends first."""
        windows = getfile_windows(offset, offset + length)
        pieces = await asyncio.gather(
            *(self._get_window(index, message_id, start, limit) for start, limit in windows)
        )
        skip = offset - windows[0][0]
        return b"".join(pieces)[skip : skip + length]

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        for account in self._accounts:
            try:
                self._loop.run(_disconnect(account.client), 10)
            except (StoreError, ConnectionError, OSError) as exc:
                log.debug("disconnecting %s: %r", account.name, exc)
        self._loop.close()

    def _pick_account(self, work: str) -> int:
        """Round-robin, separately for uploads and reads so both spread over all accounts."""
        with self._next_lock:
            return next(self._turns[work])


async def _disconnect(client: TelegramClient) -> None:
    result = client.disconnect()
    if result is not None:
        await result


async def _call_in_dc(client: TelegramClient, dc_id: int, request: Any) -> Any:
    """Documents live in a data centre, maybe not the account's own. telethon's own
    downloads borrow an exported sender for those; so do we (a private but long-stable
    telethon 1.x API), to keep one ``getFile`` per block."""
    if dc_id == client.session.dc_id:
        return await client(request)
    sender = await client._borrow_exported_sender(dc_id)
    try:
        return await client._call(sender, request)
    finally:
        await client._return_exported_sender(sender)


def _message_id(locator: str) -> int:
    number = locator.removeprefix(FOREIGN)
    if not number.isdigit() or len(number) > 18:
        raise ChunkMissing(locator, "telegram")
    return int(number)
