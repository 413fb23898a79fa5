"""The Telegram round trip against real Telegram, opt-in (`pytest -m telegram`).

Runs when DAVFS_TEST_API_ID, DAVFS_TEST_API_HASH, DAVFS_TEST_SESSION (a telethon
StringSession of an account that administers the channel) and DAVFS_TEST_CHANNEL are
set; otherwise it is reported as not run (skipped, with the reason). Everything it
posts is deleted again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from davfs.stores.settings import TelegramSettings
from davfs.stores.telegram_accounts import SESSION_FOLDER, SessionFile, open_telegram_store
from tests.conftest import MiB, RunningServer

pytestmark = pytest.mark.telegram
NEEDED = ("DAVFS_TEST_API_ID", "DAVFS_TEST_API_HASH", "DAVFS_TEST_SESSION", "DAVFS_TEST_CHANNEL")


def test_round_trip_on_real_telegram(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    missing = [name for name in NEEDED if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live Telegram test not run: {', '.join(missing)} not set")
    data_dir = tmp_path / "data"
    channel = os.environ["DAVFS_TEST_CHANNEL"]
    SessionFile(
        data_dir / SESSION_FOLDER / "user-live.session",
        "user",
        os.environ["DAVFS_TEST_SESSION"],
        channel,
        None,
    ).save()
    settings = TelegramSettings(
        channel=channel,
        api_id=int(os.environ["DAVFS_TEST_API_ID"]),
        api_hash=os.environ["DAVFS_TEST_API_HASH"],
    )
    store = open_telegram_store(settings, data_dir)
    running = start_server(store=store, data_dir=data_dir, chunk_size="2MiB")
    body = os.urandom(5 * MiB + 12345)
    try:
        assert requests.put(running.url + "live.bin", data=body, timeout=600).status_code == 201
        assert requests.get(running.url + "live.bin", timeout=600).content == body
        ranged = requests.get(
            running.url + "live.bin", headers={"Range": "bytes=2097000-2099000"}, timeout=600
        )
        assert ranged.status_code == 206 and ranged.content == body[2097000:2099001]
    finally:
        running.app.drive.manifests.flush()
        with running.app.drive.catalog.db.engine.connect() as conn:
            locators = [str(row[0]) for row in conn.exec_driver_sql("SELECT locator FROM chunks")]
        store.delete_many(locators)
        running.stop()
