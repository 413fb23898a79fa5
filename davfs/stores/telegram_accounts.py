"""Telegram accounts: the session files ``davfs login`` writes, and opening the store from them.

A session file (``<data_dir>/telegram/<kind>-<id>.session``, mode 0600) holds a
telethon ``StringSession`` and the storage peer as that account resolved it. telethon's
``StringSession`` keeps no entities, and a channel's access hash differs per account,
so the resolved peer is saved next to the key: the server never resolves names again
(``@username`` lookups are heavily rate-limited) unless the configured channel changes.

Every session in the folder is used: a second account or a bot is added by running
``davfs login`` once more, and the store spreads requests over all of them.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telethon import TelegramClient, errors, functions, types
from telethon.sessions import StringSession

from davfs.chunk import ChunkMeta
from davfs.errors import ConfigError, StoreError
from davfs.stores.base import write_private_file
from davfs.stores.settings import TelegramSettings
from davfs.stores.telegram import Account, EventLoopThread, TelegramStore

SESSION_FOLDER = "telegram"
_INVITE = re.compile(r"^(?:https?://)?(?:t\.me|telegram\.me)/(?:\+|joinchat/)([\w-]+)/?$")
_LOGIN_TIMEOUT = 600.0


def make_client(
    session: StringSession,
    api_id: int,
    api_hash: str,
    client_class: Callable[..., TelegramClient] = TelegramClient,
) -> TelegramClient:
    """The one place a TelegramClient is built, with the options davfs relies on (tests
    and the bench pass the fake's client class)."""
    return client_class(
        session,
        api_id,
        api_hash,
        flood_sleep_threshold=0,
        request_retries=3,
        raise_last_call_error=True,  # else telethon ends its retries with a bare ValueError
        receive_updates=False,
        device_model="davfs",
    )


@dataclass
class SessionFile:
    """One account's saved session and the storage peer it resolved."""

    path: Path
    kind: str
    session: str = field(repr=False)
    channel: str
    peer: dict[str, int] | None

    @classmethod
    def load(cls, path: Path) -> SessionFile:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, str(data["kind"]), str(data["session"]), str(data["channel"]), data.get("peer"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                str(path), f"not a readable davfs session file ({exc}); run `davfs login` again"
            ) from None

    def save(self) -> None:
        """Write atomically, readable by the owner only: the session is a login."""
        text = json.dumps(
            {"kind": self.kind, "session": self.session, "channel": self.channel, "peer": self.peer}, indent=1
        )
        write_private_file(self.path, text.encode("utf-8"))


def session_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / SESSION_FOLDER).glob("*.session"))


def open_telegram_store(
    settings: TelegramSettings,
    data_dir: Path,
    *,
    spool_dir: str | None = None,
    max_chunk_size: int | None = None,
) -> TelegramStore:
    """Connect every saved account and build the store over them."""
    paths = session_files(data_dir)
    if not paths:
        raise ConfigError(
            "davfs.store",
            f"telegram needs a signed-in account but {data_dir / SESSION_FOLDER} has none; run `davfs login`",
        )
    _require_api_credentials(settings)
    if settings.channel == "me" and len(paths) > 1:
        raise ConfigError(
            "davfs.telegram.channel",
            f"'me' (Saved Messages) is one account's own; {len(paths)} sessions are in "
            f"{data_dir / SESSION_FOLDER}: use a channel they all administer, or keep one session",
        )
    loop = EventLoopThread()
    try:
        accounts = [
            loop.run(_connect(SessionFile.load(path), settings), settings.request_timeout) for path in paths
        ]
        options: dict[str, Any] = {} if max_chunk_size is None else {"max_chunk_size": max_chunk_size}
        return TelegramStore(
            accounts,
            loop,
            parallelism=settings.parallelism,
            flood_threshold=settings.flood_threshold,
            retries=settings.retries,
            request_timeout=settings.request_timeout,
            spool_dir=spool_dir,
            **options,
        )
    except BaseException:
        loop.close()
        raise


async def _connect(saved: SessionFile, settings: TelegramSettings) -> Account:
    client = make_client(StringSession(saved.session), settings.api_id, settings.api_hash)
    try:
        await client.connect()
        authorized = await client.is_user_authorized()
    except errors.ApiIdInvalidError:
        raise _bad_api_credentials() from None
    except (ConnectionError, OSError) as exc:
        raise StoreError("telegram", f"cannot reach Telegram: {exc}") from None
    if not authorized:
        raise ConfigError(
            str(saved.path), "this Telegram session has expired or was revoked; run `davfs login` again"
        )
    if saved.channel != settings.channel or saved.peer is None:
        peer = await resolve_peer(client, settings.channel)
        saved.channel, saved.peer = settings.channel, _peer_to_dict(peer)
        saved.save()
    return Account(saved.path.stem, client, _peer_from_dict(saved.peer), saved.kind == "bot")


async def resolve_peer(client: TelegramClient, channel: str) -> Any:
    """The input peer for a channel given as ``me``, a ``-100…`` id, ``@name`` or invite link."""
    if channel == "me":
        if await client.is_bot():
            raise ConfigError(
                "davfs.telegram.channel", "a bot has no Saved Messages; name a channel the bot administers"
            )
        return types.InputPeerSelf()
    try:
        invite = _INVITE.match(channel)
        if invite:
            found = await client(functions.messages.CheckChatInviteRequest(invite.group(1)))
            if not isinstance(found, types.ChatInviteAlready):
                raise ConfigError(
                    "davfs.telegram.channel", "this account has not joined that channel; join it first"
                )
            return await client.get_input_entity(found.chat)
        target: Any = int(channel) if re.fullmatch(r"-?\d+", channel) else channel
        peer = await client.get_input_entity(target)
    except (ValueError, errors.RPCError) as exc:
        raise ConfigError(
            "davfs.telegram.channel",
            f"cannot find {channel!r} ({type(exc).__name__}); use its @username or invite link and "
            "make sure this account is a member",
        ) from None
    if not isinstance(peer, types.InputPeerChannel):
        raise ConfigError(
            "davfs.telegram.channel",
            f"{channel!r} is not a channel; davfs stores chunks in a private channel",
        )
    return peer


def _peer_to_dict(peer: Any) -> dict[str, int]:
    if isinstance(peer, types.InputPeerChannel):
        return {"channel_id": peer.channel_id, "access_hash": peer.access_hash}
    return {"self": 1}


def _peer_from_dict(data: dict[str, int] | None) -> Any:
    if not data or "self" in data:
        return types.InputPeerSelf()
    return types.InputPeerChannel(int(data["channel_id"]), int(data["access_hash"]))


def _require_api_credentials(settings: TelegramSettings) -> None:
    if not settings.api_id or not settings.api_hash:
        raise ConfigError(
            "davfs.telegram.api_id",
            "Telegram needs api_id and api_hash from https://my.telegram.org (API development tools); "
            "set them in wsgidav.yaml or DAVFS_TELEGRAM_API_ID / DAVFS_TELEGRAM_API_HASH",
        )


def _bad_api_credentials() -> ConfigError:
    return ConfigError(
        "davfs.telegram.api_id",
        "Telegram rejected this api_id/api_hash pair; copy both from https://my.telegram.org",
    )


# -- davfs login ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoginPrompts:
    """How ``davfs login`` asks the user (the CLI reads the terminal; tests answer)."""

    phone: Callable[[], str]
    code: Callable[[], str]
    password: Callable[[], str]


def login(
    settings: TelegramSettings, data_dir: Path, *, bot_token: str | None, prompts: LoginPrompts
) -> SessionFile:
    """Sign in, check the account can post, read back and delete in the storage
    channel, and save the session. Nothing is saved unless every check passed."""
    _require_api_credentials(settings)
    loop = EventLoopThread("davfs-login")
    session = StringSession()
    client = make_client(session, settings.api_id, settings.api_hash)
    try:
        _sign_in(client, loop, bot_token, prompts)
        is_bot, me = loop.run(_whoami(client), settings.request_timeout)
        peer = loop.run(resolve_peer(client, settings.channel), settings.request_timeout)
        kind = "bot" if is_bot else "user"
        saved = SessionFile(
            data_dir / SESSION_FOLDER / f"{kind}-{me}.session",
            kind,
            session.save(),
            settings.channel,
            _peer_to_dict(peer),
        )
        _check_access(Account(saved.path.stem, client, peer, is_bot), loop, settings)
    except BaseException:
        try:
            loop.run(_quiet_disconnect(client), 10)
        finally:
            loop.close()
        raise
    saved.save()
    loop.run(_quiet_disconnect(client), 10)
    loop.close()
    return saved


def _sign_in(
    client: TelegramClient, loop: EventLoopThread, bot_token: str | None, prompts: LoginPrompts
) -> None:
    """Sign in step by step: Telegram's calls run on the loop, the questions on this
    (the terminal's) thread, so a slow answer never stalls the loop."""

    def call(coro: Coroutine[Any, Any, Any]) -> Any:
        return loop.run(coro, _LOGIN_TIMEOUT)

    with _login_errors():
        call(client.connect())
        if bot_token:
            call(client.sign_in(bot_token=bot_token))
            return
        phone = prompts.phone().strip()
        call(client.send_code_request(phone))
        code = prompts.code().strip()
        try:
            call(client.sign_in(phone=phone, code=code))
        except errors.SessionPasswordNeededError:
            password = prompts.password()
            call(client.sign_in(password=password))


@contextmanager
def _login_errors() -> Iterator[None]:
    try:
        yield
    except errors.ApiIdInvalidError:
        raise _bad_api_credentials() from None
    except (errors.AccessTokenInvalidError, errors.AccessTokenExpiredError):
        raise ConfigError("bot token", "Telegram rejected it; copy it again from @BotFather") from None
    except errors.PhoneNumberInvalidError:
        raise ConfigError(
            "phone", "Telegram does not know this number; use international format, e.g. +4915…"
        ) from None
    except (errors.PhoneCodeInvalidError, errors.PhoneCodeExpiredError):
        raise ConfigError("login code", "wrong or expired code; run `davfs login` again") from None
    except errors.PasswordHashInvalidError:
        raise ConfigError("2FA password", "wrong password; run `davfs login` again") from None
    except (ConnectionError, OSError) as exc:
        raise StoreError("telegram", f"cannot reach Telegram: {exc}") from None


async def _whoami(client: TelegramClient) -> tuple[bool, int]:
    me = await client.get_me(input_peer=False)
    return bool(getattr(me, "bot", False)), int(me.id)


async def _quiet_disconnect(client: TelegramClient) -> None:
    try:
        result = client.disconnect()
        if result is not None:
            await result
    except (ConnectionError, OSError):
        pass


def _check_access(account: Account, loop: EventLoopThread, settings: TelegramSettings) -> None:
    """Post a small chunk, read it back, delete it: the three things the store does."""
    store = TelegramStore(
        [account],
        loop,
        parallelism=2,
        flood_threshold=settings.flood_threshold,
        retries=settings.retries,
        request_timeout=settings.request_timeout,
    )
    probe = b"davfs login check " + secrets.token_bytes(16)
    meta = ChunkMeta.of(probe)
    try:
        locator = store.put(probe, meta)
    except StoreError as exc:
        if isinstance(exc.__cause__, (errors.ChatAdminRequiredError, errors.ChatWriteForbiddenError)):
            raise ConfigError(
                "davfs.telegram.channel",
                "this account cannot post there; make it an admin with 'Post messages' and 'Delete messages'",
            ) from None
        raise
    if store.get(locator, 0, len(probe)) != probe:
        raise StoreError(
            "telegram", "the check chunk came back different; is something rewriting the channel?"
        )
    try:
        store.delete(locator)
    except StoreError as exc:
        if isinstance(exc.__cause__, errors.MessageDeleteForbiddenError):
            raise _cannot_delete() from None
        raise
    if store.exists(locator):
        raise _cannot_delete()


def _cannot_delete() -> ConfigError:
    return ConfigError(
        "davfs.telegram.channel", "this account cannot delete messages there; give it 'Delete messages'"
    )
