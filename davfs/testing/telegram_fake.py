"""A wire-level fake Telegram for testing telethon-based code without a network.

Why this shape: most of what a Telegram chunk store depends on lives *inside*
telethon (flood-wait sleeping, entity caching, upload part splitting, the
download iterators' offsets, file-reference refreshes, request retries). A fake
above telethon's public API would test our beliefs about telethon instead of
telethon. So only the network is replaced: `FakeTelegramClient` is a real
`TelegramClient` whose `_sender` is a `FakeSender`. telethon's own `connect()`,
`_call()`, `upload_file()`, `send_file()`, `iter_download()`, `start()` ... run
unchanged. Each request is serialized to TL bytes (as `MTProtoSender` does),
parsed by the in-process server `FakeTelegram`, answered with TL bytes that the
request's own `read_result` parses back, and server errors are raised through
`telethon.errors.rpc_message_to_error`, exactly like the real sender.

The server enforces the Telegram rules a chunk store can trip over (part sizes,
`upload.getFile` alignment, caption length, admin rights, bot posting rate,
file-reference expiry) with the error names Telegram uses, and can inject
bounded faults (RPC errors, dropped connections, lost confirmations, messages
vanishing, expired references) for failure-path tests and soak benches.

Not modelled: update delivery (no updates are pushed, so event handlers never
fire), CDN redirects, photos/thumbnails, groups and private chats with other
users, takeout, and the MTProto transport itself (no encryption, acks, salts).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import math
import os
import random
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from telethon import TelegramClient, errors
from telethon import password as tl_password
from telethon.crypto import AuthKey
from telethon.extensions import BinaryReader
from telethon.sessions import StringSession
from telethon.tl import TLObject, functions, types
from telethon.tl.alltlobjects import LAYER

DEFAULT_API_ID = 12345
DEFAULT_API_HASH = "0123456789abcdef0123456789abcdef"
HOME_DC = 2
SERVER_ADDRESS = "127.0.0.1"
SERVER_PORT = 443

KiB = 1024
MiB = 1024 * KiB
MAX_PART_SIZE = 512 * KiB
SMALL_FILE_MAX = 10 * MiB  # telethon switches to SaveBigFilePart above this (uploads.py)
GETFILE_MAX = MiB
FILE_HASH_RANGE = 128 * KiB
"""``upload.getFileHashes`` hashes ranges of this size (as for CDN files)."""
FILE_HASHES_PER_CALL = 8
"""Ranges one ``upload.getFileHashes`` answers (undocumented; clients must page)."""
DELETE_MAX_IDS = 100

# Admin right names accepted by add_channel/set_admin, mapped to ChatAdminRights flags.
RIGHTS = {
    "post": "post_messages",
    "edit": "edit_messages",
    "delete": "delete_messages",
    "invite": "invite_users",
    "change_info": "change_info",
}
DEFAULT_ADMIN_RIGHTS = frozenset({"post", "edit", "delete"})

FAULT_KINDS = ("flood", "drop", "lose", "rpc_call_fail")


@dataclass(frozen=True)
class _Limits:
    """Per-account upload limits: Premium doubles parts, file size and caption."""

    parts: int
    file_size: int
    caption: int


_FREE = _Limits(parts=4000, file_size=2000 * MiB, caption=1024)
_PREMIUM = _Limits(parts=8000, file_size=4000 * MiB, caption=4096)


class RpcFault(Exception):
    """An RPC error as the server sends it on the wire (code + message).

    Handlers raise it; `FakeSender` turns it into the exception telethon would
    raise for that message via `rpc_message_to_error`, so "FLOOD_WAIT_7" becomes a
    real `FloodWaitError(seconds=7)` that telethon's `_call` handles itself.
    """

    _CODES = (
        ("FLOOD_", 420),
        ("AUTH_KEY_", 401),
        ("SESSION_PASSWORD_NEEDED", 401),
        ("CHAT_WRITE_FORBIDDEN", 403),
        ("MESSAGE_DELETE_FORBIDDEN", 403),
        ("RPC_", 500),
        ("RANDOM_ID_DUPLICATE", 500),
        ("FILE_MIGRATE_", 303),
    )

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> int:
        """The error code Telegram pairs with the message; telethon only uses it for unknown messages."""
        for prefix, code in self._CODES:
            if self.message.startswith(prefix):
                return code
        return 400

    def to_error(self, request: TLObject) -> errors.RPCError:
        """The exception the real MTProtoSender would set on the request's future."""
        return errors.rpc_message_to_error(types.RpcError(self.code, self.message), request)


def _utc_now() -> datetime.datetime:
    """TL dates have second resolution; round now so stored and wire dates compare equal."""
    return datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0)


def _utf16_len(text: str) -> int:
    """Telegram measures caption and message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _phone_key(phone: str) -> str:
    """Digits only, as telethon's parse_phone sends them."""
    return re.sub(r"\D", "", phone)


# ---------------------------------------------------------------------------
# Server-side records (public ones are returned to tests for inspection)


@dataclass(eq=False)
class FakeAccount:
    """A Telegram user or bot the fake server knows.

    Compared by identity so accounts can key dicts (``admins={bot: {"post"}}``).
    """

    id: int
    first_name: str
    phone: str | None = None
    bot_token: str | None = None
    premium: bool = False
    password: str | None = field(default=None, repr=False)

    @property
    def is_bot(self) -> bool:
        """Bots log in by token and have no Saved Messages or history access."""
        return self.bot_token is not None

    @property
    def limits(self) -> _Limits:
        """Upload and caption limits for this account."""
        return _PREMIUM if self.premium and not self.is_bot else _FREE


@dataclass(eq=False)
class FakeChannel:
    """A broadcast channel: who may see it, who may post and delete."""

    id: int
    title: str
    username: str | None
    invite_hash: str | None
    creator: FakeAccount | None
    date: datetime.datetime
    admins: dict[int, frozenset[str]] = field(default_factory=dict)
    members: set[int] = field(default_factory=set)
    invite_expired: bool = False

    @property
    def marked_id(self) -> int:
        """The id telethon and the Bot API use for this channel (-100...)."""
        return -(10**12 + self.id)

    def rights(self, account: FakeAccount) -> frozenset[str]:
        """Admin rights of an account; the creator has all of them."""
        if self.creator is account:
            return frozenset(RIGHTS)
        return self.admins.get(account.id, frozenset())

    def is_member(self, account: FakeAccount) -> bool:
        """Creator, admins and members see a private channel."""
        return self.creator is account or account.id in self.admins or account.id in self.members


@dataclass(eq=False)
class FakeDocument:
    """A stored file: the bytes the server keeps plus what the Document TL carries."""

    id: int
    access_hash: int
    file_reference: bytes
    data: bytes
    mime_type: str
    attributes: list[TLObject]
    date: datetime.datetime
    dc_id: int
    deleted: bool = False

    def to_tl(self) -> types.Document:
        """The Document as the server sends it, with the *current* file reference."""
        return types.Document(
            id=self.id,
            access_hash=self.access_hash,
            file_reference=self.file_reference,
            date=self.date,
            mime_type=self.mime_type,
            size=len(self.data),
            dc_id=self.dc_id,
            attributes=list(self.attributes),
        )


@dataclass(eq=False)
class FakeMessage:
    """A stored message (caption or text, optional document)."""

    id: int
    date: datetime.datetime
    text: str
    sender_id: int
    random_id: int
    document: FakeDocument | None = None
    entities: list[TLObject] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        """The document's bytes, or b"" for a text message."""
        return self.document.data if self.document else b""


class _Box:
    """The message-id space of one channel or one user's Saved Messages.

    Ids are sequential from 1 and never reused, like Telegram's; ``pts`` moves
    on every change so replies carry a plausible update state.
    """

    def __init__(self, peer: types.PeerChannel | types.PeerUser) -> None:
        self.peer = peer
        self.messages: dict[int, FakeMessage] = {}
        self.next_id = 1
        self.pts = 0

    def add(self, make: Callable[[int], FakeMessage]) -> FakeMessage:
        """Store a message under the next id."""
        message = make(self.next_id)
        self.next_id += 1
        self.pts += 1
        self.messages[message.id] = message
        return message

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Remove messages; their documents stop being downloadable."""
        gone = []
        for message_id in ids:
            message = self.messages.pop(message_id, None)
            if message is None:
                continue
            if message.document is not None:
                message.document.deleted = True
                message.document.data = b""
            gone.append(message_id)
        self.pts += len(gone)
        return gone

    def history(
        self,
        *,
        offset_id: int,
        offset_date: datetime.datetime | None,
        add_offset: int,
        limit: int,
        max_id: int,
        min_id: int,
    ) -> list[FakeMessage]:
        """messages.getHistory semantics, newest first.

        The window starts at the first message older than ``offset_id`` (or
        ``offset_date``), moves by ``add_offset`` (negative looks newer, which is
        how telethon's ``reverse=True`` pages) and holds ``limit`` (≤ 100) messages;
        ``max_id``/``min_id`` are exclusive bounds.
        """
        newest_first = sorted(self.messages.values(), key=lambda m: m.id, reverse=True)
        if offset_id > 0:
            start = sum(1 for m in newest_first if m.id >= offset_id)
        elif offset_date is not None and offset_date.timestamp() > 0:  # 0 on the wire means "none"
            start = sum(1 for m in newest_first if m.date >= offset_date)
        else:
            start = 0
        start += add_offset
        end = start + max(0, min(limit, 100))
        window = newest_first[max(start, 0) : max(end, 0)]
        return [m for m in window if (not max_id or m.id < max_id) and (not min_id or m.id > min_id)]


@dataclass
class _Upload:
    """Parts received for one file_id on one auth key (Telegram scopes them so)."""

    big: bool
    parts: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None  # declared by SaveBigFilePart; None while only -1 was sent


@dataclass
class _SrpChallenge:
    """One account.getPassword answer; single use, like Telegram's srp_id."""

    srp_id: int
    b: int
    srp_b: bytes


@dataclass
class _KeyState:
    """What the server knows about one auth key: its account and its pending uploads/logins."""

    account: FakeAccount | None = None
    uploads: dict[int, _Upload] = field(default_factory=dict)
    awaiting_password: FakeAccount | None = None
    srp: _SrpChallenge | None = None

    def bind(self, account: FakeAccount | None) -> None:
        """Authorize (or with None, log out) this key."""
        self.account = account
        self.awaiting_password = None
        self.srp = None


@dataclass
class _Call:
    """What a handler knows about the request it serves: the key and the connection."""

    key: _KeyState
    sender: FakeSender

    @property
    def account(self) -> FakeAccount:
        """The authorized account (the dispatcher already rejected unauthorized keys)."""
        assert self.key.account is not None
        return self.key.account


def _check_part_sizes(parts: Mapping[int, bytes], last_index: int) -> None:
    """Telegram's part rule: all parts but the last have one size, a multiple of
    1 KiB dividing 512 KiB; the last part is no larger."""
    sizes = {len(data) for index, data in parts.items() if index < last_index}
    for size in sizes:
        if size % KiB or MAX_PART_SIZE % size:
            raise RpcFault("FILE_PART_SIZE_INVALID")
    if len(sizes) > 1:
        raise RpcFault("FILE_PART_SIZE_CHANGED")
    last = parts.get(last_index)
    if sizes and last is not None and len(last) > next(iter(sizes)):
        raise RpcFault("FILE_PART_SIZE_CHANGED")


# ---------------------------------------------------------------------------
# 2FA: the server half of Telegram's SRP check


def _telegram_srp_prime() -> bytes:
    """Telegram's 2048-bit SRP prime, read from telethon rather than restated.

    telethon accepts p/g instantly only for this prime (password.check_prime_and_good);
    any other prime is factorised in pure Python, which takes minutes.
    """
    for const in tl_password.check_prime_and_good.__code__.co_consts:
        if isinstance(const, tuple) and len(const) == 256:
            return bytes(const)
    raise RuntimeError("telethon.password no longer embeds Telegram's SRP prime")


class _SrpVerifier:
    """Server side of SRP (core.telegram.org/api/srp): keeps only v = g^x, never the password."""

    G = 3

    def __init__(self, password: str) -> None:
        prime = _telegram_srp_prime()
        self.algo = types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=os.urandom(40), salt2=os.urandom(16), g=self.G, p=prime
        )
        self._p = int.from_bytes(prime, "big")
        x = int.from_bytes(tl_password.compute_hash(self.algo, password), "big")
        self._v = pow(self.G, x, self._p)
        self._k = int.from_bytes(
            tl_password.sha256(tl_password.num_bytes_for_hash(prime), tl_password.big_num_for_hash(self.G)),
            "big",
        )

    def challenge(self) -> _SrpChallenge:
        """B = k·v + g^b, retried until it passes the client's range checks."""
        while True:
            b = secrets.randbits(2048)
            g_b = pow(self.G, b, self._p)
            srp_b = (self._k * self._v + g_b) % self._p
            if tl_password.is_good_mod_exp_first(g_b, self._p) and tl_password.is_good_mod_exp_first(
                srp_b, self._p
            ):
                return _SrpChallenge(srp_id=secrets.randbits(63), b=b, srp_b=srp_b.to_bytes(256, "big"))

    def verify(self, challenge: _SrpChallenge, a_bytes: bytes, m1: bytes) -> bool:
        """Recompute S = (A·v^u)^b and the client's proof M1 from it."""
        p = self._p
        a_int = int.from_bytes(a_bytes, "big")
        if not tl_password.is_good_large(a_int, p):
            return False
        a_for_hash = tl_password.big_num_for_hash(a_int)
        b_for_hash = tl_password.num_bytes_for_hash(challenge.srp_b)
        u = int.from_bytes(tl_password.sha256(a_for_hash, b_for_hash), "big")
        s = pow(a_int * pow(self._v, u, p) % p, challenge.b, p)
        k = tl_password.sha256(tl_password.big_num_for_hash(s))
        p_for_hash = tl_password.num_bytes_for_hash(self.algo.p)
        g_for_hash = tl_password.big_num_for_hash(self.G)
        expected = tl_password.sha256(
            tl_password.xor(tl_password.sha256(p_for_hash), tl_password.sha256(g_for_hash)),
            tl_password.sha256(self.algo.salt1),
            tl_password.sha256(self.algo.salt2),
            a_for_hash,
            b_for_hash,
            k,
        )
        return secrets.compare_digest(expected, m1)


# ---------------------------------------------------------------------------
# Faults


def _request_matches(pattern: str | type, request: TLObject) -> bool:
    """A fault pattern is a request class or its name, with or without "Request"."""
    if isinstance(pattern, type):
        return isinstance(request, pattern)
    name = type(request).__name__
    return pattern in (name, name.removesuffix("Request"))


@dataclass
class _Rule:
    """One armed fault: what it matches, what it does, how often."""

    pattern: str | type
    kind: str  # "error" | "drop" | "lose"
    error: str | None
    times: int
    account: FakeAccount | None


@dataclass
class _RandomFaults:
    """Seeded random faults for soak tests and benches."""

    rate: float
    rng: random.Random
    kinds: tuple[str, ...]
    flood_seconds: int
    only: tuple[str | type, ...] | None


class _Faults:
    """Armed faults, consumed as requests arrive (callers hold the server lock)."""

    def __init__(self) -> None:
        self.rules: list[_Rule] = []
        self.random: _RandomFaults | None = None

    def take(
        self, request: TLObject, account: FakeAccount | None, *, handshake: bool
    ) -> tuple[str, str | None]:
        """The fault for this request: ("none"|"error"|"drop"|"lose", error message)."""
        for rule in self.rules:
            if _request_matches(rule.pattern, request) and rule.account in (None, account):
                rule.times -= 1
                if rule.times <= 0:
                    self.rules.remove(rule)
                return rule.kind, rule.error
        chaos = self.random
        if chaos is None or handshake:
            return "none", None
        if chaos.only is not None and not any(_request_matches(p, request) for p in chaos.only):
            return "none", None
        if chaos.rng.random() >= chaos.rate:
            return "none", None
        kind = chaos.rng.choice(chaos.kinds)
        if kind == "flood":
            return "error", f"FLOOD_WAIT_{chaos.flood_seconds}"
        if kind == "rpc_call_fail":
            return "error", "RPC_CALL_FAIL"
        return kind, None


# ---------------------------------------------------------------------------
# Wire helpers

_BOOL_TRUE = struct.pack("<I", 0x997275B5)
_BOOL_FALSE = struct.pack("<I", 0xBC799737)
_VECTOR = struct.pack("<I", 0x1CB5C415)

# Wrappers that only change how a query is executed; the server answers the inner query.
_WRAPPERS = (
    functions.InvokeWithLayerRequest,
    functions.InvokeWithoutUpdatesRequest,
    functions.InvokeAfterMsgRequest,
    functions.InvokeWithTakeoutRequest,
)


def _to_wire(result: Any) -> bytes:
    """Serialize a handler's result the way Telegram does (Bool, Vector<T> or an object)."""
    if result is True:
        return _BOOL_TRUE
    if result is False:
        return _BOOL_FALSE
    if isinstance(result, list):
        return _VECTOR + struct.pack("<i", len(result)) + b"".join(bytes(x) for x in result)
    return bytes(result)


def _unwrap(request: TLObject) -> tuple[TLObject, functions.InitConnectionRequest | None]:
    """Strip invokeWithLayer/initConnection/invokeWithoutUpdates; return the query and the init."""
    init = None
    while True:
        if isinstance(request, _WRAPPERS):
            request = request.query
        elif isinstance(request, functions.InitConnectionRequest):
            init = request
            request = request.query
        else:
            return request, init


# ---------------------------------------------------------------------------
# The server


class FakeTelegram:
    """The in-process Telegram: accounts, channels, messages, files, keys and faults.

    All state sits behind one lock; requests are served synchronously under it on
    the client's event-loop thread, so tests may arm faults or inspect state from
    any thread. Latency and bandwidth are simulated outside the lock with
    ``asyncio.sleep`` so concurrent requests overlap like real ones.

    Observability (read from any thread; ``reset_stats()`` zeroes them):
    ``requests`` counts every request that reached the server, faulted ones
    included, by the class name of the query inside any invokeWithLayer/
    initConnection wrapper ("GetFileRequest"); ``getfile_log`` lists the
    (offset, limit) of every upload.getFile, newest last, bounded by
    ``getfile_log_size``; ``in_flight``/``max_in_flight`` count requests between
    send and answer, simulated latency included.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        bandwidth: float | None = None,
        bot_posts_per_minute: int | None = 20,
        valid_apps: Iterable[tuple[int, str]] | None = None,
        media_dc_id: int = HOME_DC,
        clock: Callable[[], float] = time.monotonic,
        getfile_log_size: int = 100_000,
        seed: int | None = None,
    ) -> None:
        self.latency = latency
        self.bandwidth = bandwidth
        self.bot_posts_per_minute = bot_posts_per_minute
        self.valid_apps = set(valid_apps) if valid_apps is not None else {(DEFAULT_API_ID, DEFAULT_API_HASH)}
        self.media_dc_id = media_dc_id
        self.clock = clock
        self.getfile_log_size = getfile_log_size

        self.requests: collections.Counter[str] = collections.Counter()
        self.getfile_log: list[tuple[int, int]] = []
        self.max_in_flight = 0
        self.in_flight = 0

        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._secret = self._rng.randbytes(16)
        self._accounts: dict[int, FakeAccount] = {}
        self._phones: dict[str, FakeAccount] = {}
        self._tokens: dict[str, FakeAccount] = {}
        self._channels: dict[int, FakeChannel] = {}
        self._boxes: dict[tuple[str, int], _Box] = {}
        self._documents: dict[int, FakeDocument] = {}
        self._keys: dict[int, _KeyState] = {}
        self._codes: dict[str, tuple[str, str]] = {}
        self._verifiers: dict[int, _SrpVerifier] = {}
        self._exports: dict[int, tuple[bytes, FakeAccount]] = {}
        self._random_ids: dict[int, set[int]] = collections.defaultdict(set)
        self._bot_posts: dict[tuple[int, int], collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._faults = _Faults()
        self._next_user_id = 5_000_000_001
        self._next_channel_id = 1_500_000_001
        self._handlers: dict[type, tuple[Callable[[_Call, Any], Any], bool]] = {}
        for service in (
            _AccountService(self),
            _PeerService(self),
            _FileService(self),
            _MessageService(self),
        ):
            self._handlers.update(service.handlers())

    # -- accounts and channels ------------------------------------------------

    def add_user(
        self, phone: str, *, password: str | None = None, premium: bool = False, first_name: str | None = None
    ) -> FakeAccount:
        """Register a user account reachable by phone (2FA if password is given)."""
        key = _phone_key(phone)
        with self._lock:
            if not key or key in self._phones:
                raise ValueError(f"phone {phone!r} is empty or taken")
            account = FakeAccount(
                id=self._next_user_id,
                first_name=first_name or f"User {key[-4:]}",
                phone=key,
                premium=premium,
                password=password,
            )
            self._next_user_id += 1
            self._accounts[account.id] = account
            self._phones[key] = account
            self._boxes["user", account.id] = _Box(types.PeerUser(account.id))
            return account

    def add_bot(self, token: str, *, first_name: str | None = None) -> FakeAccount:
        """Register a bot; the token is "<bot_id>:<secret>" as BotFather issues them."""
        bot_id, _, secret = token.partition(":")
        if not bot_id.isdigit() or not secret:
            raise ValueError(f"bot token {token!r} is not '<bot_id>:<secret>'")
        with self._lock:
            if int(bot_id) in self._accounts:
                raise ValueError(f"account id {bot_id} is taken")
            account = FakeAccount(id=int(bot_id), first_name=first_name or f"Bot {bot_id}", bot_token=token)
            self._accounts[account.id] = account
            self._tokens[token] = account
            return account

    def add_channel(
        self,
        title: str,
        *,
        username: str | None = None,
        invite_hash: str | None = None,
        creator: FakeAccount | None = None,
        admins: Mapping[FakeAccount, Iterable[str]] | Iterable[FakeAccount] = (),
        members: Iterable[FakeAccount] = (),
    ) -> FakeChannel:
        """Create a broadcast channel. ``admins`` maps accounts to rights ("post",
        "edit", "delete", "invite", "change_info"); a plain iterable grants
        post/edit/delete. A channel with a username is public (readable by all)."""
        with self._lock:
            channel = FakeChannel(
                id=self._next_channel_id,
                title=title,
                username=username,
                invite_hash=invite_hash,
                creator=creator,
                date=_utc_now(),
            )
            self._next_channel_id += 1
            pairs = (
                admins.items() if isinstance(admins, Mapping) else ((a, DEFAULT_ADMIN_RIGHTS) for a in admins)
            )
            for account, rights in pairs:
                channel.admins[account.id] = self._rights(rights)
            channel.members.update(a.id for a in members)
            self._channels[channel.id] = channel
            self._boxes["channel", channel.id] = _Box(types.PeerChannel(channel.id))
            return channel

    def set_admin(self, channel: FakeChannel, account: FakeAccount, rights: Iterable[str] | None) -> None:
        """Grant admin rights (None demotes to a plain member)."""
        with self._lock:
            if rights is None:
                channel.admins.pop(account.id, None)
                channel.members.add(account.id)
            else:
                channel.admins[account.id] = self._rights(rights)

    def add_member(self, channel: FakeChannel, account: FakeAccount) -> None:
        """Make an account a plain member (can read a private channel, cannot post)."""
        with self._lock:
            channel.members.add(account.id)

    def remove_member(self, channel: FakeChannel, account: FakeAccount) -> None:
        """Kick an account (also drops its admin rights)."""
        with self._lock:
            channel.members.discard(account.id)
            channel.admins.pop(account.id, None)

    def expire_invite(self, channel: FakeChannel) -> None:
        """The channel's invite link stops working (INVITE_HASH_EXPIRED)."""
        with self._lock:
            channel.invite_expired = True

    @staticmethod
    def _rights(rights: Iterable[str]) -> frozenset[str]:
        result = frozenset(rights)
        unknown = result - set(RIGHTS)
        if unknown:
            raise ValueError(f"unknown admin rights {sorted(unknown)}; known: {sorted(RIGHTS)}")
        return result

    # -- sessions and clients -------------------------------------------------

    def authorized_session(self, account: FakeAccount, session: StringSession | None = None) -> StringSession:
        """A StringSession on DC 2 whose (new random) auth key is logged in as ``account``."""
        session = session if session is not None else StringSession()
        if not session.auth_key:
            session.auth_key = AuthKey(os.urandom(256))
        if not session.server_address:
            session.set_dc(HOME_DC, SERVER_ADDRESS, SERVER_PORT)
        with self._lock:
            self._key_state(session.auth_key).bind(account)
        return session

    def client(
        self,
        account: FakeAccount | None = None,
        *,
        session: StringSession | str | None = None,
        api_id: int = DEFAULT_API_ID,
        api_hash: str = DEFAULT_API_HASH,
        **kwargs: Any,
    ) -> FakeTelegramClient:
        """A client bound to this server; already logged in as ``account`` if given.

        A str ``session`` is a saved StringSession string. Safe to call outside an
        event loop; connect it on the loop that will use it.
        """
        if isinstance(session, str) or session is None:
            session = StringSession(session or None)
        if account is not None:
            self.authorized_session(account, session)
        return FakeTelegramClient(session, api_id, api_hash, server=self, **kwargs)

    def revoke(self, account: FakeAccount) -> None:
        """Terminate every session of an account (AUTH_KEY_UNREGISTERED from then on)."""
        with self._lock:
            for state in self._keys.values():
                if state.account is account:
                    state.bind(None)

    def revoke_key(self, auth_key: AuthKey | bytes) -> None:
        """Terminate one session, given its AuthKey (e.g. ``client.session.auth_key``) or key bytes."""
        key = auth_key if isinstance(auth_key, AuthKey) else AuthKey(auth_key)
        with self._lock:
            self._key_state(key).bind(None)

    def last_code(self, phone: str) -> str:
        """The login code auth.sendCode last "sent" to this phone."""
        with self._lock:
            try:
                return self._codes[_phone_key(phone)][0]
            except KeyError:
                raise LookupError(f"no login code was sent to {phone!r}") from None

    def input_peer(self, channel: FakeChannel, account: FakeAccount) -> types.InputPeerChannel:
        """The InputPeerChannel with the access hash Telegram gives ``account``."""
        return types.InputPeerChannel(channel.id, self.channel_hash(channel, account))

    def channel_hash(self, channel: FakeChannel, account: FakeAccount) -> int:
        """Channel access hashes are per account on Telegram; derive them so."""
        return self._hash64("channel", account.id, channel.id)

    def user_hash(self, target: FakeAccount, viewer: FakeAccount) -> int:
        """User access hashes are per viewing account too."""
        return self._hash64("user", viewer.id, target.id)

    def _hash64(self, *parts: object) -> int:
        digest = hashlib.blake2b(repr(parts).encode(), key=self._secret, digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True) or 1

    # -- inspection -----------------------------------------------------------

    def messages(self, peer: FakeChannel | FakeAccount) -> list[FakeMessage]:
        """Snapshot of a channel's (or a user's Saved Messages') messages, by id."""
        with self._lock:
            return sorted(self._box_of(peer).messages.values(), key=lambda m: m.id)

    def message(self, peer: FakeChannel | FakeAccount, message_id: int) -> FakeMessage | None:
        """One stored message, or None if it does not exist (any more)."""
        with self._lock:
            return self._box_of(peer).messages.get(message_id)

    def stored_bytes(self) -> int:
        """Bytes the server holds: documents of live messages plus uploaded parts not yet sent."""
        with self._lock:
            documents = sum(len(m.data) for box in self._boxes.values() for m in box.messages.values())
            parts = sum(
                len(data)
                for key in self._keys.values()
                for u in key.uploads.values()
                for data in u.parts.values()
            )
            return documents + parts

    def reset_stats(self) -> None:
        """Zero the request counter, the GetFile log and the in-flight peak."""
        with self._lock:
            self.requests.clear()
            self.getfile_log.clear()
            self.max_in_flight = self.in_flight

    def _box_of(self, peer: FakeChannel | FakeAccount) -> _Box:
        kind = "channel" if isinstance(peer, FakeChannel) else "user"
        try:
            return self._boxes[kind, peer.id]
        except KeyError:
            raise ValueError(f"{peer!r} has no message box (bots have no Saved Messages)") from None

    # -- faults ---------------------------------------------------------------

    def inject(
        self, request: str | type, error: str, *, times: int = 1, account: FakeAccount | None = None
    ) -> None:
        """The next ``times`` matching requests fail with this RPC error, e.g. "FLOOD_WAIT_7"."""
        self._arm(_Rule(request, "error", error, times, account))

    def drop(self, request: str | type, *, times: int = 1, account: FakeAccount | None = None) -> None:
        """The connection drops before the server acts: the call raises ConnectionError."""
        self._arm(_Rule(request, "drop", None, times, account))

    def lose_confirmation(
        self, request: str | type, *, times: int = 1, account: FakeAccount | None = None
    ) -> None:
        """The server performs the request, then the answer is lost (ConnectionError)."""
        self._arm(_Rule(request, "lose", None, times, account))

    def random_faults(
        self,
        rate: float,
        seed: int,
        kinds: Iterable[str] = ("flood", "drop", "rpc_call_fail"),
        *,
        flood_seconds: int = 1,
        requests: Iterable[str | type] | None = None,
    ) -> None:
        """Fail a seeded random ``rate`` of requests (never connection handshakes).

        kinds: "flood" (FLOOD_WAIT_<flood_seconds>, slept by telethon), "drop",
        "lose", "rpc_call_fail" (telethon sleeps 2 s and retries). ``requests``
        limits them to some request types.
        """
        kinds = tuple(kinds)
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds or not 0 <= rate <= 1:
            raise ValueError(f"bad random faults: rate={rate}, kinds={kinds}")
        only = tuple(requests) if requests is not None else None
        with self._lock:
            self._faults.random = _RandomFaults(rate, random.Random(seed), kinds, flood_seconds, only)

    def clear_faults(self) -> None:
        """Disarm every injected and random fault."""
        with self._lock:
            self._faults = _Faults()

    def delete_behind(self, peer: FakeChannel | FakeAccount, ids: Iterable[int]) -> None:
        """Messages vanish behind the client's back (someone else deleted them)."""
        with self._lock:
            self._box_of(peer).delete(ids)

    def expire_file_references(self) -> None:
        """Every file reference handed out so far goes stale; messages carry new ones."""
        with self._lock:
            for document in self._documents.values():
                document.file_reference = self._new_file_reference()

    def _arm(self, rule: _Rule) -> None:
        if rule.times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.rules.append(rule)

    # -- serving requests (called by FakeSender) ------------------------------

    def _key_state(self, auth_key: AuthKey) -> _KeyState:
        """Keys are known by key_id, as on the wire; an unknown key is a fresh, logged-out one."""
        return self._keys.setdefault(auth_key.key_id, _KeyState())

    def _begin_request(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _end_request(self) -> None:
        with self._lock:
            self.in_flight -= 1

    async def _transfer(self, nbytes: int) -> None:
        """Half the round trip plus the payload at the per-request bandwidth."""
        delay = self.latency / 2
        if self.bandwidth:
            delay += nbytes / self.bandwidth
        await asyncio.sleep(delay)

    def _process(self, sender: FakeSender, data: bytes) -> bytes:
        """Serve one request from its TL bytes; raise RpcFault or ConnectionError like the wire."""
        request = BinaryReader(data).tgread_object()
        query, init = _unwrap(request)
        with self._lock:
            self.requests[type(query).__name__] += 1
            key = self._key_state(sender.auth_key)
            kind, error = self._faults.take(query, key.account, handshake=init is not None)
            if kind == "drop":
                raise ConnectionError(f"fake: connection dropped before {type(query).__name__} arrived")
            if kind == "error":
                assert error is not None
                raise RpcFault(error)
            if init is not None:
                sender.api_id_valid = any(init.api_id == app_id for app_id, _ in self.valid_apps)
            if sender.api_id_valid is None:
                raise RpcFault("CONNECTION_NOT_INITED")
            if not sender.api_id_valid:
                raise RpcFault("API_ID_INVALID")
            try:
                handler, public = self._handlers[type(query)]
            except KeyError:
                raise NotImplementedError(f"FakeTelegram does not answer {type(query).__name__}") from None
            if not public and key.account is None:
                raise RpcFault("AUTH_KEY_UNREGISTERED")
            payload = _to_wire(handler(_Call(key, sender), query))
            if kind == "lose":
                raise ConnectionError(f"fake: {type(query).__name__} was served but its answer was lost")
            return payload

    # -- helpers shared by the services (callers hold the lock) --------------

    def _check_app(self, api_id: int, api_hash: str) -> None:
        if (api_id, api_hash) not in self.valid_apps:
            raise RpcFault("API_ID_INVALID")

    def _new_file_reference(self) -> bytes:
        return b"\x02" + self._rng.randbytes(20)

    def _rand_long(self) -> int:
        return self._rng.getrandbits(63) or 1

    def _user_tl(self, target: FakeAccount, viewer: FakeAccount) -> types.User:
        is_self = target is viewer
        return types.User(
            id=target.id,
            is_self=is_self or None,
            bot=target.is_bot or None,
            premium=target.premium or None,
            access_hash=self.user_hash(target, viewer),
            first_name=target.first_name,
            phone=target.phone if is_self else None,
            bot_info_version=1 if target.is_bot else None,
        )

    def _channel_tl(self, channel: FakeChannel, viewer: FakeAccount) -> types.Channel:
        rights = channel.rights(viewer)
        admin_rights = None
        if rights:
            admin_rights = types.ChatAdminRights(**{RIGHTS[r]: True for r in rights})
        return types.Channel(
            id=channel.id,
            title=channel.title,
            photo=types.ChatPhotoEmpty(),
            date=channel.date,
            creator=channel.creator is viewer or None,
            left=not channel.is_member(viewer) or None,
            broadcast=True,
            access_hash=self.channel_hash(channel, viewer),
            username=channel.username,
            admin_rights=admin_rights,
            participants_count=len(channel.members | set(channel.admins)) + (1 if channel.creator else 0),
        )

    def _message_tl(self, box: _Box, message: FakeMessage, viewer: FakeAccount) -> types.Message:
        media = None
        if message.document is not None:
            media = types.MessageMediaDocument(document=message.document.to_tl())
        return types.Message(
            id=message.id,
            peer_id=box.peer,
            date=message.date,
            message=message.text,
            out=message.sender_id == viewer.id or None,
            post=isinstance(box.peer, types.PeerChannel) or None,
            media=media,
            entities=list(message.entities) or None,
        )

    def _channel(self, account: FakeAccount, channel_id: int, access_hash: int) -> FakeChannel:
        """Resolve an input channel as Telegram does: wrong hash CHANNEL_INVALID,
        not allowed to see it CHANNEL_PRIVATE; bots may pass access_hash 0."""
        channel = self._channels.get(channel_id)
        if channel is None:
            raise RpcFault("CHANNEL_INVALID")
        if access_hash != self.channel_hash(channel, account) and not (account.is_bot and access_hash == 0):
            raise RpcFault("CHANNEL_INVALID")
        if not channel.is_member(account) and channel.username is None:
            raise RpcFault("CHANNEL_PRIVATE")
        return channel

    def _input_channel(self, account: FakeAccount, peer: TLObject) -> FakeChannel:
        if isinstance(peer, (types.InputChannel, types.InputPeerChannel)):
            return self._channel(account, peer.channel_id, peer.access_hash)
        raise RpcFault("CHANNEL_INVALID")

    def _input_box(self, account: FakeAccount, peer: TLObject) -> tuple[_Box, FakeChannel | None]:
        """The message box an InputPeer names: a channel, or the account's Saved Messages."""
        if isinstance(peer, types.InputPeerChannel):
            channel = self._channel(account, peer.channel_id, peer.access_hash)
            return self._boxes["channel", channel.id], channel
        is_self = isinstance(peer, types.InputPeerSelf) or (
            isinstance(peer, types.InputPeerUser) and peer.user_id == account.id
        )
        if is_self and not account.is_bot:
            return self._boxes["user", account.id], None
        raise RpcFault("PEER_ID_INVALID")


class _Service:
    """A group of request handlers sharing the server's state."""

    def __init__(self, server: FakeTelegram) -> None:
        self.server = server

    def handlers(self) -> dict[type, tuple[Callable[[_Call, Any], Any], bool]]:
        """Request class -> (handler, usable without authorization)."""
        raise NotImplementedError


class _AccountService(_Service):
    """Config, self user, update state, login (code, 2FA, bot token), logout, DC export."""

    def handlers(self) -> dict[type, tuple[Callable[[_Call, Any], Any], bool]]:
        return {
            functions.help.GetConfigRequest: (self.get_config, True),
            functions.users.GetUsersRequest: (self.get_users, False),
            functions.updates.GetStateRequest: (self.get_state, False),
            functions.updates.GetDifferenceRequest: (self.get_difference, False),
            functions.auth.SendCodeRequest: (self.send_code, True),
            functions.auth.SignInRequest: (self.sign_in, True),
            functions.account.GetPasswordRequest: (self.get_password, True),
            functions.auth.CheckPasswordRequest: (self.check_password, True),
            functions.auth.ImportBotAuthorizationRequest: (self.import_bot_authorization, True),
            functions.auth.LogOutRequest: (self.log_out, False),
            functions.auth.ExportAuthorizationRequest: (self.export_authorization, False),
            functions.auth.ImportAuthorizationRequest: (self.import_authorization, True),
        }

    def get_config(self, call: _Call, request: Any) -> types.Config:
        now = _utc_now()
        return types.Config(
            date=now,
            expires=now + datetime.timedelta(hours=1),
            test_mode=False,
            this_dc=call.sender.dc_id,
            dc_options=[types.DcOption(dc, SERVER_ADDRESS, SERVER_PORT) for dc in range(1, 6)],
            dc_txt_domain_name="fake.invalid",
            chat_size_max=200,
            megagroup_size_max=200_000,
            forwarded_count_max=100,
            online_update_period_ms=210_000,
            offline_blur_timeout_ms=5_000,
            offline_idle_timeout_ms=30_000,
            online_cloud_timeout_ms=300_000,
            notify_cloud_delay_ms=30_000,
            notify_default_delay_ms=1_500,
            push_chat_period_ms=60_000,
            push_chat_limit=2,
            edit_time_limit=172_800,
            revoke_time_limit=2_147_483_647,
            revoke_pm_time_limit=2_147_483_647,
            rating_e_decay=2_419_200,
            stickers_recent_limit=200,
            channels_read_media_period=604_800,
            call_receive_timeout_ms=20_000,
            call_ring_timeout_ms=90_000,
            call_connect_timeout_ms=30_000,
            call_packet_timeout_ms=10_000,
            me_url_prefix="https://t.me/",
            caption_length_max=_FREE.caption,
            message_length_max=4096,
            webfile_dc_id=4,
        )

    def get_users(self, call: _Call, request: Any) -> list[TLObject]:
        me = call.account
        users: list[TLObject] = []
        for wanted in request.id:
            if isinstance(wanted, types.InputUserSelf):
                users.append(self.server._user_tl(me, me))
            elif isinstance(wanted, types.InputUser):
                target = self.server._accounts.get(wanted.user_id)
                hash_ok = target is not None and (
                    wanted.access_hash == self.server.user_hash(target, me) or target is me
                )
                if target is not None and hash_ok:
                    users.append(self.server._user_tl(target, me))
                else:
                    users.append(types.UserEmpty(wanted.user_id))
        return users

    def get_state(self, call: _Call, request: Any) -> types.updates.State:
        box = self.server._boxes.get(("user", call.account.id))
        return types.updates.State(pts=box.pts if box else 0, qts=0, date=_utc_now(), seq=0, unread_count=0)

    def get_difference(self, call: _Call, request: Any) -> types.updates.DifferenceEmpty:
        return types.updates.DifferenceEmpty(date=_utc_now(), seq=0)

    def send_code(self, call: _Call, request: Any) -> types.auth.SentCode:
        self.server._check_app(request.api_id, request.api_hash)
        phone = _phone_key(request.phone_number)
        if phone not in self.server._phones:
            raise RpcFault("PHONE_NUMBER_INVALID")
        code = f"{self.server._rng.randrange(100_000):05d}"
        code_hash = self.server._rng.randbytes(8).hex()
        self.server._codes[phone] = (code, code_hash)
        return types.auth.SentCode(type=types.auth.SentCodeTypeApp(length=5), phone_code_hash=code_hash)

    def sign_in(self, call: _Call, request: Any) -> types.auth.Authorization:
        phone = _phone_key(request.phone_number)
        account = self.server._phones.get(phone)
        if account is None:
            raise RpcFault("PHONE_NUMBER_INVALID")
        sent = self.server._codes.get(phone)
        if sent is None or sent[1] != request.phone_code_hash:
            raise RpcFault("PHONE_CODE_EXPIRED")
        if not request.phone_code:
            raise RpcFault("PHONE_CODE_EMPTY")
        if request.phone_code != sent[0]:
            raise RpcFault("PHONE_CODE_INVALID")
        del self.server._codes[phone]
        if account.password is not None:
            call.key.bind(None)
            call.key.awaiting_password = account
            raise RpcFault("SESSION_PASSWORD_NEEDED")
        return self._authorize(call, account)

    def get_password(self, call: _Call, request: Any) -> types.account.Password:
        account = call.key.account or call.key.awaiting_password
        if account is None:
            raise RpcFault("AUTH_KEY_UNREGISTERED")
        common: dict[str, Any] = {
            "new_algo": types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
                salt1=os.urandom(8), salt2=os.urandom(16), g=_SrpVerifier.G, p=_telegram_srp_prime()
            ),
            "new_secure_algo": types.SecurePasswordKdfAlgoUnknown(),
            "secure_random": os.urandom(32),
        }
        if account.password is None:
            return types.account.Password(has_password=False, **common)
        verifier = self._verifier(account)
        call.key.srp = verifier.challenge()
        return types.account.Password(
            has_password=True,
            current_algo=verifier.algo,
            srp_B=call.key.srp.srp_b,
            srp_id=call.key.srp.srp_id,
            **common,
        )

    def check_password(self, call: _Call, request: Any) -> types.auth.Authorization:
        account = call.key.awaiting_password
        if account is None:
            raise RpcFault("AUTH_KEY_UNREGISTERED")
        check = request.password
        challenge, call.key.srp = call.key.srp, None
        if not isinstance(check, types.InputCheckPasswordSRP):
            raise RpcFault("PASSWORD_HASH_INVALID")
        if challenge is None or check.srp_id != challenge.srp_id:
            raise RpcFault("SRP_ID_INVALID")
        if not self._verifier(account).verify(challenge, check.A, check.M1):
            raise RpcFault("PASSWORD_HASH_INVALID")
        return self._authorize(call, account)

    def import_bot_authorization(self, call: _Call, request: Any) -> types.auth.Authorization:
        self.server._check_app(request.api_id, request.api_hash)
        account = self.server._tokens.get(request.bot_auth_token)
        if account is None:
            raise RpcFault("ACCESS_TOKEN_INVALID")
        return self._authorize(call, account)

    def log_out(self, call: _Call, request: Any) -> types.auth.LoggedOut:
        call.key.bind(None)
        return types.auth.LoggedOut()

    def export_authorization(self, call: _Call, request: Any) -> types.auth.ExportedAuthorization:
        if request.dc_id == call.sender.dc_id or not 1 <= request.dc_id <= 5:
            raise RpcFault("DC_ID_INVALID")
        export_id = self.server._rand_long()
        token = self.server._rng.randbytes(32)
        self.server._exports[export_id] = (token, call.account)
        return types.auth.ExportedAuthorization(id=export_id, bytes=token)

    def import_authorization(self, call: _Call, request: Any) -> types.auth.Authorization:
        exported = self.server._exports.pop(request.id, None)
        if exported is None or exported[0] != request.bytes:
            raise RpcFault("AUTH_BYTES_INVALID")
        return self._authorize(call, exported[1])

    def _authorize(self, call: _Call, account: FakeAccount) -> types.auth.Authorization:
        call.key.bind(account)
        return types.auth.Authorization(user=self.server._user_tl(account, account))

    def _verifier(self, account: FakeAccount) -> _SrpVerifier:
        """Derived lazily: the PBKDF2 step costs ~0.1 s and most accounts never log in by password."""
        verifier = self.server._verifiers.get(account.id)
        if verifier is None:
            assert account.password is not None
            verifier = self.server._verifiers[account.id] = _SrpVerifier(account.password)
        return verifier


class _PeerService(_Service):
    """Finding channels: by id+hash, username, invite link; membership and rights."""

    def handlers(self) -> dict[type, tuple[Callable[[_Call, Any], Any], bool]]:
        return {
            functions.channels.GetChannelsRequest: (self.get_channels, False),
            functions.contacts.ResolveUsernameRequest: (self.resolve_username, False),
            functions.messages.CheckChatInviteRequest: (self.check_chat_invite, False),
            functions.messages.ImportChatInviteRequest: (self.import_chat_invite, False),
            functions.channels.GetParticipantRequest: (self.get_participant, False),
        }

    def get_channels(self, call: _Call, request: Any) -> types.messages.Chats:
        me = call.account
        return types.messages.Chats(
            [self.server._channel_tl(self.server._input_channel(me, c), me) for c in request.id]
        )

    def resolve_username(self, call: _Call, request: Any) -> types.contacts.ResolvedPeer:
        if not re.fullmatch(r"[A-Za-z]\w{3,31}", request.username):
            raise RpcFault("USERNAME_INVALID")
        wanted = request.username.lower()
        for channel in self.server._channels.values():
            if channel.username and channel.username.lower() == wanted:
                return types.contacts.ResolvedPeer(
                    peer=types.PeerChannel(channel.id),
                    chats=[self.server._channel_tl(channel, call.account)],
                    users=[],
                )
        raise RpcFault("USERNAME_NOT_OCCUPIED")

    def check_chat_invite(self, call: _Call, request: Any) -> TLObject:
        channel = self._by_invite(request.hash)
        if channel.is_member(call.account):
            return types.ChatInviteAlready(chat=self.server._channel_tl(channel, call.account))
        return types.ChatInvite(
            title=channel.title,
            photo=types.PhotoEmpty(0),
            participants_count=len(channel.members),
            color=0,
            channel=True,
            broadcast=True,
        )

    def import_chat_invite(self, call: _Call, request: Any) -> types.Updates:
        channel = self._by_invite(request.hash)
        me = call.account
        if me.is_bot:
            raise RpcFault("BOT_METHOD_INVALID")
        if channel.is_member(me):
            raise RpcFault("USER_ALREADY_PARTICIPANT")
        channel.members.add(me.id)
        return types.Updates(
            updates=[], users=[], chats=[self.server._channel_tl(channel, me)], date=_utc_now(), seq=0
        )

    def get_participant(self, call: _Call, request: Any) -> types.channels.ChannelParticipant:
        me = call.account
        channel = self.server._input_channel(me, request.channel)
        peer = request.participant
        if isinstance(peer, types.InputPeerSelf):
            target: FakeAccount | None = me
        elif isinstance(peer, types.InputPeerUser):
            target = self.server._accounts.get(peer.user_id)
        else:
            raise RpcFault("PARTICIPANT_ID_INVALID")
        if target is None or not channel.is_member(target):
            raise RpcFault("USER_NOT_PARTICIPANT")
        rights = channel.rights(target)
        admin_rights = types.ChatAdminRights(**{RIGHTS[r]: True for r in rights})
        participant: TLObject
        if channel.creator is target:
            participant = types.ChannelParticipantCreator(user_id=target.id, admin_rights=admin_rights)
        elif rights:
            promoted_by = channel.creator.id if channel.creator else target.id
            participant = types.ChannelParticipantAdmin(
                user_id=target.id,
                promoted_by=promoted_by,
                date=channel.date,
                admin_rights=admin_rights,
                is_self=target is me or None,
                inviter_id=promoted_by if target is me else None,
            )
        else:
            participant = types.ChannelParticipant(user_id=target.id, date=channel.date)
        return types.channels.ChannelParticipant(
            participant=participant,
            chats=[self.server._channel_tl(channel, me)],
            users=[self.server._user_tl(target, me)],
        )

    def _by_invite(self, invite_hash: str) -> FakeChannel:
        for channel in self.server._channels.values():
            if channel.invite_hash is not None and channel.invite_hash == invite_hash:
                if channel.invite_expired:
                    raise RpcFault("INVITE_HASH_EXPIRED")
                return channel
        raise RpcFault("INVITE_HASH_INVALID")


class _FileService(_Service):
    """Upload parts and upload.getFile, with Telegram's size and alignment rules."""

    def handlers(self) -> dict[type, tuple[Callable[[_Call, Any], Any], bool]]:
        return {
            functions.upload.SaveFilePartRequest: (self.save_file_part, False),
            functions.upload.SaveBigFilePartRequest: (self.save_big_file_part, False),
            functions.upload.GetFileRequest: (self.get_file, False),
            functions.upload.GetFileHashesRequest: (self.get_file_hashes, False),
        }

    def save_file_part(self, call: _Call, request: Any) -> bool:
        self._save(call, request.file_id, request.file_part, request.bytes, big=False, total=None)
        return True

    def save_big_file_part(self, call: _Call, request: Any) -> bool:
        self._save(
            call, request.file_id, request.file_part, request.bytes, big=True, total=request.file_total_parts
        )
        return True

    def _save(
        self, call: _Call, file_id: int, index: int, data: bytes, *, big: bool, total: int | None
    ) -> None:
        """Store a part; reject it as soon as the rules show it can't be part of a valid file.

        A part is known not to be the last once a higher part exists (or the
        declared total says so); only then must its size divide 512 KiB.
        """
        limits = call.account.limits
        if not data:
            raise RpcFault("FILE_PART_EMPTY")
        if len(data) > MAX_PART_SIZE:
            raise RpcFault("FILE_PART_TOO_BIG")
        if not 0 <= index < limits.parts:
            raise RpcFault("FILE_PARTS_INVALID")
        upload = call.key.uploads.get(file_id)
        if upload is None:
            upload = _Upload(big=big)
        elif upload.big != big:
            raise RpcFault("FILE_PARTS_INVALID")
        declared = upload.total
        if total is not None and total != -1:
            if total <= 0 or total > limits.parts or index >= total:
                raise RpcFault("FILE_PARTS_INVALID")
            if declared is not None and declared != total:
                raise RpcFault("FILE_PARTS_INVALID")
            declared = total
        elif total is not None and declared is not None and index >= declared:
            raise RpcFault("FILE_PARTS_INVALID")
        parts = dict(upload.parts)
        parts[index] = data
        last_index = max(max(parts), declared - 1 if declared else -1)
        _check_part_sizes(parts, last_index)
        upload.parts[index] = data
        upload.total = declared
        call.key.uploads[file_id] = upload

    def assemble(self, call: _Call, input_file: TLObject) -> bytes:
        """The bytes of an uploaded InputFile/InputFileBig, checked as sendMedia does; parts are consumed."""
        limits = call.account.limits
        big = isinstance(input_file, types.InputFileBig)
        if not isinstance(input_file, (types.InputFile, types.InputFileBig)):
            raise RpcFault("MEDIA_INVALID")
        count = input_file.parts
        if not 0 < count <= limits.parts:
            raise RpcFault("FILE_PARTS_INVALID")
        upload = call.key.uploads.get(input_file.id)
        if upload is None:
            raise RpcFault("FILE_PART_0_MISSING")
        if upload.big != big or (big and upload.total != count):
            raise RpcFault("FILE_PARTS_INVALID")
        for index in range(count):
            if index not in upload.parts:
                raise RpcFault(f"FILE_PART_{index}_MISSING")
        parts = {i: upload.parts[i] for i in range(count)}
        _check_part_sizes(parts, count - 1)
        data = b"".join(parts[i] for i in range(count))
        if len(data) > limits.file_size or (not big and len(data) > SMALL_FILE_MAX):
            raise RpcFault("FILE_PARTS_INVALID")
        if not big and input_file.md5_checksum and hashlib.md5(data).hexdigest() != input_file.md5_checksum:
            raise RpcFault("MD5_CHECKSUM_INVALID")
        return data

    def consume(self, call: _Call, input_file: TLObject) -> None:
        """Uploaded parts are used once; free them."""
        call.key.uploads.pop(input_file.id, None)

    def get_file_hashes(self, call: _Call, request: Any) -> list[types.FileHash]:
        """SHA-256 of consecutive 128 KiB ranges from ``offset`` on, a few per call
        (how many is not documented; clients page by the last range's end)."""
        document = self._document_at(call, request.location)
        if request.offset < 0 or request.offset % FILE_HASH_RANGE:
            raise RpcFault("OFFSET_INVALID")
        hashes = []
        for start in range(request.offset, len(document.data), FILE_HASH_RANGE)[:FILE_HASHES_PER_CALL]:
            part = document.data[start : start + FILE_HASH_RANGE]
            hashes.append(types.FileHash(offset=start, limit=len(part), hash=hashlib.sha256(part).digest()))
        return hashes

    def _document_at(self, call: _Call, location: Any) -> FakeDocument:
        if not isinstance(location, types.InputDocumentFileLocation) or location.thumb_size:
            raise RpcFault("LOCATION_INVALID")
        document = self.server._documents.get(location.id)
        if document is None or document.access_hash != location.access_hash:
            raise RpcFault("FILE_ID_INVALID")
        if document.deleted or location.file_reference != document.file_reference:
            raise RpcFault("FILE_REFERENCE_EXPIRED")
        if document.dc_id != call.sender.dc_id:
            raise RpcFault(f"FILE_MIGRATE_{document.dc_id}")
        return document

    def get_file(self, call: _Call, request: Any) -> types.upload.File:
        server = self.server
        offset, limit = request.offset, request.limit
        server.getfile_log.append((offset, limit))
        del server.getfile_log[: -server.getfile_log_size]
        align = KiB if request.precise else 4 * KiB
        if offset < 0 or offset % align:
            raise RpcFault("OFFSET_INVALID")
        if (
            limit <= 0
            or limit > GETFILE_MAX
            or limit % align
            or (not request.precise and GETFILE_MAX % limit)
        ):
            raise RpcFault("LIMIT_INVALID")
        if offset // GETFILE_MAX != (offset + limit - 1) // GETFILE_MAX:
            raise RpcFault("LIMIT_INVALID")
        document = self._document_at(call, request.location)
        return types.upload.File(
            type=types.storage.FilePartial(),
            mtime=int(document.date.timestamp()),
            bytes=document.data[offset : offset + limit],
        )


class _MessageService(_Service):
    """Posting, fetching, paging and deleting messages in channels and Saved Messages."""

    def __init__(self, server: FakeTelegram) -> None:
        super().__init__(server)
        self.files = _FileService(server)

    def handlers(self) -> dict[type, tuple[Callable[[_Call, Any], Any], bool]]:
        return {
            functions.messages.SendMediaRequest: (self.send_media, False),
            functions.messages.SendMessageRequest: (self.send_message, False),
            functions.channels.GetMessagesRequest: (self.get_channel_messages, False),
            functions.messages.GetMessagesRequest: (self.get_messages, False),
            functions.messages.GetHistoryRequest: (self.get_history, False),
            functions.channels.DeleteMessagesRequest: (self.delete_channel_messages, False),
            functions.messages.DeleteMessagesRequest: (self.delete_messages, False),
        }

    def send_media(self, call: _Call, request: Any) -> types.Updates:
        media = request.media
        if not isinstance(media, types.InputMediaUploadedDocument):
            raise RpcFault("MEDIA_INVALID")
        box, channel = self._writable_box(call, request.peer)
        if _utf16_len(request.message) > call.account.limits.caption:
            raise RpcFault("MEDIA_CAPTION_TOO_LONG")
        self._check_random_id(call, request.random_id)
        data = self.files.assemble(call, media.file)
        self._check_bot_rate(call, channel)
        self.files.consume(call, media.file)
        server = self.server
        document = FakeDocument(
            id=server._rand_long(),
            access_hash=server._rand_long(),
            file_reference=server._new_file_reference(),
            data=data,
            mime_type=media.mime_type,
            attributes=list(media.attributes),
            date=_utc_now(),
            dc_id=server.media_dc_id,
        )
        server._documents[document.id] = document
        return self._post(call, box, channel, request, document)

    def send_message(self, call: _Call, request: Any) -> types.Updates:
        box, channel = self._writable_box(call, request.peer)
        if not request.message.strip():
            raise RpcFault("MESSAGE_EMPTY")
        if _utf16_len(request.message) > 4096:
            raise RpcFault("MESSAGE_TOO_LONG")
        self._check_random_id(call, request.random_id)
        self._check_bot_rate(call, channel)
        return self._post(call, box, channel, request, None)

    def get_channel_messages(self, call: _Call, request: Any) -> types.messages.ChannelMessages:
        me = call.account
        channel = self.server._input_channel(me, request.channel)
        box = self.server._boxes["channel", channel.id]
        return types.messages.ChannelMessages(
            pts=box.pts,
            count=len(request.id),
            messages=self._by_ids(box, request.id, me),
            topics=[],
            chats=[self.server._channel_tl(channel, me)],
            users=[],
        )

    def get_messages(self, call: _Call, request: Any) -> types.messages.Messages:
        """messages.getMessages reads the account's own box; bots' private chats are not modelled."""
        me = call.account
        box = self.server._boxes.get(("user", me.id)) or _Box(types.PeerUser(me.id))
        return types.messages.Messages(
            messages=self._by_ids(box, request.id, me),
            topics=[],
            chats=[],
            users=[self.server._user_tl(me, me)],
        )

    def get_history(self, call: _Call, request: Any) -> TLObject:
        me = call.account
        if me.is_bot:
            raise RpcFault("BOT_METHOD_INVALID")
        box, channel = self.server._input_box(me, request.peer)
        window = box.history(
            offset_id=request.offset_id,
            offset_date=request.offset_date,
            add_offset=request.add_offset,
            limit=request.limit,
            max_id=request.max_id,
            min_id=request.min_id,
        )
        messages = [self.server._message_tl(box, m, me) for m in window]
        if channel is not None:
            return types.messages.ChannelMessages(
                pts=box.pts,
                count=len(box.messages),
                messages=messages,
                topics=[],
                chats=[self.server._channel_tl(channel, me)],
                users=[],
            )
        users = [self.server._user_tl(me, me)]
        if len(messages) == len(box.messages):
            return types.messages.Messages(messages=messages, topics=[], chats=[], users=users)
        return types.messages.MessagesSlice(
            count=len(box.messages), messages=messages, topics=[], chats=[], users=users
        )

    def delete_channel_messages(self, call: _Call, request: Any) -> types.messages.AffectedMessages:
        """Telegram names no error for >100 ids (telethon always sends ≤100 per request);
        the fake answers 400 MESSAGE_IDS_TOO_MUCH, which telethon raises as BadRequestError."""
        me = call.account
        channel = self.server._input_channel(me, request.channel)
        self._check_id_count(request.id)
        box = self.server._boxes["channel", channel.id]
        if "delete" not in channel.rights(me):
            for message_id in request.id:
                message = box.messages.get(message_id)
                if message is not None and message.sender_id != me.id:
                    raise RpcFault("MESSAGE_DELETE_FORBIDDEN")
        gone = box.delete(request.id)
        return types.messages.AffectedMessages(pts=box.pts, pts_count=len(gone))

    def delete_messages(self, call: _Call, request: Any) -> types.messages.AffectedMessages:
        me = call.account
        self._check_id_count(request.id)
        box = self.server._boxes.get(("user", me.id))
        if box is None:
            return types.messages.AffectedMessages(pts=0, pts_count=0)
        gone = box.delete(request.id)
        return types.messages.AffectedMessages(pts=box.pts, pts_count=len(gone))

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _check_id_count(ids: list[int]) -> None:
        if len(ids) > DELETE_MAX_IDS:
            raise RpcFault("MESSAGE_IDS_TOO_MUCH")

    def _writable_box(self, call: _Call, peer: TLObject) -> tuple[_Box, FakeChannel | None]:
        """Posting in a broadcast channel needs the creator or an admin with "post"."""
        box, channel = self.server._input_box(call.account, peer)
        if channel is not None and "post" not in channel.rights(call.account):
            if channel.is_member(call.account):
                raise RpcFault("CHAT_ADMIN_REQUIRED")
            raise RpcFault("CHAT_WRITE_FORBIDDEN")
        return box, channel

    def _check_random_id(self, call: _Call, random_id: int) -> None:
        if random_id in self.server._random_ids[call.account.id]:
            raise RpcFault("RANDOM_ID_DUPLICATE")

    def _check_bot_rate(self, call: _Call, channel: FakeChannel | None) -> None:
        """Bots may post about 20 messages a minute per chat; the wait is until a slot frees."""
        server = self.server
        limit = server.bot_posts_per_minute
        if limit is None or channel is None or not call.account.is_bot:
            return
        now = server.clock()
        recent = server._bot_posts[call.account.id, channel.id]
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= limit:
            raise RpcFault(f"FLOOD_WAIT_{max(1, math.ceil(recent[0] + 60 - now))}")
        recent.append(now)

    def _post(
        self, call: _Call, box: _Box, channel: FakeChannel | None, request: Any, document: FakeDocument | None
    ) -> types.Updates:
        me = call.account
        self.server._random_ids[me.id].add(request.random_id)
        message = box.add(
            lambda message_id: FakeMessage(
                id=message_id,
                date=_utc_now(),
                text=request.message,
                sender_id=me.id,
                random_id=request.random_id,
                document=document,
                entities=list(request.entities or []),
            )
        )
        message_tl = self.server._message_tl(box, message, me)
        update: TLObject
        if channel is not None:
            update = types.UpdateNewChannelMessage(message=message_tl, pts=box.pts, pts_count=1)
        else:
            update = types.UpdateNewMessage(message=message_tl, pts=box.pts, pts_count=1)
        return types.Updates(
            updates=[types.UpdateMessageID(id=message.id, random_id=request.random_id), update],
            users=[self.server._user_tl(me, me)],
            chats=[self.server._channel_tl(channel, me)] if channel is not None else [],
            date=message.date,
            seq=0,
        )

    def _by_ids(self, box: _Box, wanted: list[TLObject], viewer: FakeAccount) -> list[TLObject]:
        """Messages in request order, MessageEmpty for missing ones (as Telegram answers)."""
        result: list[TLObject] = []
        for item in wanted:
            message_id = item.id if isinstance(item, types.InputMessageID) else 0
            message = box.messages.get(message_id)
            if message is None:
                result.append(types.MessageEmpty(id=message_id, peer_id=box.peer))
            else:
                result.append(self.server._message_tl(box, message, viewer))
        return result


# ---------------------------------------------------------------------------
# Client side


class FakeSender:
    """Stands in for telethon's MTProtoSender, one per connection.

    Same surface telethon uses (``connect``, ``disconnect``, ``is_connected``,
    ``send``, ``disconnected``, ``auth_key``, ``dc_id``, keepalive hooks).
    ``send`` serializes the request immediately (so malformed requests fail in
    the caller, as with RequestState) and returns a future per request that
    resolves to the parsed TL result or raises the RPC error; the request keeps
    running if the caller stops waiting, like a request already on the wire.
    """

    def __init__(
        self,
        server: FakeTelegram,
        auth_key: AuthKey | None,
        *,
        dc_id: int = HOME_DC,
        auth_key_callback: Callable[[AuthKey], Any] | None = None,
    ) -> None:
        self.server = server
        self.auth_key = auth_key or AuthKey(None)
        self.dc_id = dc_id
        self.api_id_valid: bool | None = None  # set by initConnection on each new connection
        self._auth_key_callback = auth_key_callback
        self._connected = False
        self._disconnected_future: asyncio.Future[None] | None = None
        self._exchanges: set[asyncio.Task[None]] = set()

    async def connect(self, connection: object) -> bool:
        """No socket; a missing key is "generated" as the DH exchange would, unbound to any account."""
        if self._connected:
            return False
        if not self.auth_key:
            self.auth_key.key = os.urandom(256)
            if self._auth_key_callback is not None:
                await self._auth_key_callback(self.auth_key)
        self.api_id_valid = None
        self._connected = True
        if self._disconnected_future is None or self._disconnected_future.done():
            self._disconnected_future = asyncio.get_running_loop().create_future()
        return True

    def is_connected(self) -> bool:
        return self._connected

    def _transport_connected(self) -> bool:
        return self._connected

    def _keepalive_ping(self, ping_id: int) -> None:
        """telethon's keepalive loop pings every minute; nothing to keep alive here."""

    async def disconnect(self) -> None:
        """Cancel requests in flight, like MTProtoSender on a user disconnect."""
        self._connected = False
        for task in list(self._exchanges):
            task.cancel()
        if self._exchanges:
            await asyncio.wait(self._exchanges)
        if self._disconnected_future is not None and not self._disconnected_future.done():
            self._disconnected_future.set_result(None)

    @property
    def disconnected(self) -> asyncio.Future[None]:
        if self._disconnected_future is None:
            self._disconnected_future = asyncio.get_running_loop().create_future()
            self._disconnected_future.set_result(None)
        return asyncio.shield(self._disconnected_future)

    def send(self, request: Any, ordered: bool = False) -> Any:
        """A future (or a list of futures for a list of requests), as MTProtoSender.send."""
        if not self._connected:
            raise ConnectionError("Cannot send requests while disconnected")
        if not isinstance(request, list):
            return self._start(request, after=None)
        futures: list[asyncio.Future[Any]] = []
        previous = None
        for item in request:
            previous = self._start(item, after=previous if ordered else None)
            futures.append(previous)
        return futures

    def _start(self, request: TLObject, after: asyncio.Future[Any] | None) -> asyncio.Future[Any]:
        data = bytes(request)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        task = loop.create_task(self._exchange(request, data, future, after))
        self._exchanges.add(task)
        task.add_done_callback(self._exchanges.discard)
        return future

    async def _exchange(
        self, request: TLObject, data: bytes, future: asyncio.Future[Any], after: asyncio.Future[Any] | None
    ) -> None:
        server = self.server
        server._begin_request()
        try:
            if after is not None:
                await asyncio.wait([after])
            await server._transfer(len(data))
            try:
                payload = server._process(self, data)
            except RpcFault as fault:
                outcome: Any = fault.to_error(request)
            except Exception as exc:  # ConnectionError faults, NotImplementedError, or a fake bug
                outcome = exc
            else:
                await server._transfer(len(payload))
                try:
                    outcome = request.read_result(BinaryReader(payload))
                except Exception as exc:  # a malformed answer is a fake bug; let the caller see it
                    outcome = exc
                else:
                    if not future.done():
                        future.set_result(outcome)
                    return
            if not future.done():
                future.set_exception(outcome)
        except asyncio.CancelledError:
            future.cancel()
            raise
        finally:
            server._end_request()


class FakeTelegramClient(TelegramClient):  # type: ignore[misc]  # telethon ships no type hints
    """A real TelegramClient whose network is a `FakeTelegram`.

    Only the sender is swapped (in ``__init__``): telethon's own ``connect()``
    (with its loop recording and "loop must not change" check), ``_call``,
    ``disconnect()``, ``is_connected()`` and ``start()`` run unchanged, because
    each of them reaches the network only through ``self._sender``.
    ``_create_exported_sender`` is the one override: telethon builds an
    ``MTProtoSender`` inline there for foreign-DC downloads.

    Signature-compatible with TelegramClient, so code under test can take a
    factory ``lambda session, api_id, api_hash: FakeTelegramClient(session,
    api_id, api_hash, server=fake)``.
    """

    def __init__(
        self,
        session: Any = None,
        api_id: int = DEFAULT_API_ID,
        api_hash: str = DEFAULT_API_HASH,
        *,
        server: FakeTelegram,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, api_id, api_hash, **kwargs)
        self.fake_server = server
        self._sender = FakeSender(server, self.session.auth_key, auth_key_callback=self._auth_key_callback)

    async def _create_exported_sender(self, dc_id: int) -> FakeSender:
        """Same steps as telethon's (telegrambaseclient.py): export the authorization,
        open a sender to the other DC, import it there inside initConnection."""
        dc = await self._get_dc(dc_id)
        sender = FakeSender(self.fake_server, None, dc_id=dc.id)
        await sender.connect(None)
        auth = await self(functions.auth.ExportAuthorizationRequest(dc_id))
        self._init_request.query = functions.auth.ImportAuthorizationRequest(id=auth.id, bytes=auth.bytes)
        await sender.send(functions.InvokeWithLayerRequest(LAYER, self._init_request))
        return sender
