"""A data folder signed in to the fake Telegram, as `davfs login` would leave it.

The store under test is opened through the same path the server uses
(`open_telegram_store` reading session files); only `make_client` is swapped so the
clients it builds talk to the in-process `FakeTelegram`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from davfs.stores import telegram_accounts
from davfs.stores.settings import TelegramSettings
from davfs.stores.telegram import TelegramStore
from davfs.stores.telegram_accounts import SESSION_FOLDER, SessionFile, open_telegram_store
from davfs.testing.telegram_fake import (
    DEFAULT_API_HASH,
    DEFAULT_API_ID,
    FakeAccount,
    FakeChannel,
    FakeTelegram,
    FakeTelegramClient,
)

CHANNEL = "@davfs_store"


@dataclass
class TelegramRig:
    """One fake Telegram with a user who administers the storage channel."""

    fake: FakeTelegram
    user: FakeAccount
    channel: FakeChannel
    data_dir: Path
    stores: list[TelegramStore] = field(default_factory=list)

    def settings(self, **overrides: Any) -> TelegramSettings:
        values: dict[str, Any] = {
            "channel": CHANNEL,
            "api_id": DEFAULT_API_ID,
            "api_hash": DEFAULT_API_HASH,
            "parallelism": 4,
            "flood_threshold": 5,
            "retries": 3,
            "request_timeout": 30,
        }
        values.update(overrides)
        return TelegramSettings(**values)

    def sign_in(self, account: FakeAccount, *, kind: str | None = None) -> Path:
        """Write a session file for ``account`` as `davfs login` does (peer resolved later)."""
        kind = kind or ("bot" if account.is_bot else "user")
        session = self.fake.authorized_session(account)
        path = self.data_dir / SESSION_FOLDER / f"{kind}-{account.id}.session"
        SessionFile(path, kind, session.save(), CHANNEL, None).save()
        return path

    def open_store(self, **overrides: Any) -> TelegramStore:
        store = open_telegram_store(
            self.settings(**overrides), self.data_dir, max_chunk_size=64 * 1024 * 1024
        )
        self.stores.append(store)
        return store


@pytest.fixture
def telegram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TelegramRig]:
    fake = FakeTelegram()
    user = fake.add_user("+15550001")
    channel = fake.add_channel("davfs store", username=CHANNEL[1:], admins={user: {"post", "delete"}})

    real_make_client = telegram_accounts.make_client
    fake_client = functools.partial(FakeTelegramClient, server=fake)
    monkeypatch.setattr(
        telegram_accounts,
        "make_client",
        lambda session, api_id, api_hash: real_make_client(
            session, api_id, api_hash, client_class=fake_client
        ),
    )
    rig = TelegramRig(fake, user, channel, tmp_path / "data")
    rig.sign_in(user)
    yield rig
    for store in rig.stores:
        store.close()
