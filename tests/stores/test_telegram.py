"""TelegramStore on the wire-level fake: the shared contract, Telegram's rules, faults."""

from __future__ import annotations

import os
import time

import pytest

from davfs.chunk import ChunkMeta
from davfs.errors import ChunkMissing, ConfigError, StoreError, StoreUnavailable
from davfs.stores.telegram import TelegramStore, getfile_windows, parse_caption
from tests.stores.conformance import StoreConformance
from tests.telegram_rig import TelegramRig

MiB = 1024 * 1024


class TestTelegramStore(StoreConformance):
    largest_chunk = 24 * MiB  # 48 parts: enough to cross the 10 MiB big-file switch

    @pytest.fixture
    def store(self, telegram: TelegramRig) -> TelegramStore:
        return telegram.open_store()


def put(store: TelegramStore, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    return store.put(data, ChunkMeta.of(data)), data


def test_getfile_windows_obey_telegrams_rules() -> None:
    for offset, length in [(0, MiB), (MiB, MiB), (1, 1), (4095, 2), (MiB - 1, 2), (12345, 3 * MiB), (0, 5)]:
        windows = getfile_windows(offset, offset + length)
        covered = (windows[0][0], windows[-1][0] + windows[-1][1])
        assert covered[0] <= offset and covered[1] >= offset + length
        for start, limit in windows:
            assert start % 4096 == 0 and limit % 4096 == 0 and MiB % limit == 0
            assert start // MiB == (start + limit - 1) // MiB
    assert getfile_windows(3 * MiB, 4 * MiB) == [(3 * MiB, MiB)]  # a block is one request


def test_a_block_read_is_one_request_and_reads_only_what_it_covers(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    locator, data = put(store, 6 * MiB + 100)
    store.get(locator, 0, 1)  # fetch the message once
    telegram.fake.reset_stats()
    assert store.get(locator, 2 * MiB, MiB) == data[2 * MiB : 3 * MiB]
    assert telegram.fake.requests["GetFileRequest"] == 1
    telegram.fake.reset_stats()
    assert store.get(locator, 5 * MiB + 12345, 7) == data[5 * MiB + 12345 : 5 * MiB + 12352]
    assert telegram.fake.getfile_log == [(5 * MiB + 12288, 4096)]


def test_chunk_messages_describe_themselves(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    locator, data = put(store, 3 * MiB + 1)
    message = telegram.fake.message(telegram.channel, int(locator))
    assert message is not None
    parsed = parse_caption(message.text)
    assert parsed is not None and parsed[0] == ChunkMeta.of(data).chunk_hash and parsed[1] == len(data)
    assert [meta for loc, meta in store.iter_chunks() if loc == locator] == [ChunkMeta.of(data)]


def test_expired_file_references_are_refreshed(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    locator, data = put(store, MiB + 7)
    assert store.get(locator, 0, 10) == data[:10]
    telegram.fake.expire_file_references()
    assert store.get(locator, MiB, 7) == data[MiB:]


def test_short_flood_waits_are_slept_and_long_ones_are_503(telegram: TelegramRig) -> None:
    store = telegram.open_store(flood_threshold=2)
    locator, data = put(store, 5000)
    store.get(locator, 0, 1)
    telegram.fake.inject("GetFileRequest", "FLOOD_WAIT_1")
    started = time.monotonic()
    assert store.get(locator, 0, 5000) == data
    assert time.monotonic() - started >= 1
    telegram.fake.inject("GetFileRequest", "FLOOD_WAIT_120")
    with pytest.raises(StoreUnavailable) as raised:
        store.get(locator, 0, 5000)
    assert raised.value.retry_after == 120


def test_dropped_connections_are_retried(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    telegram.fake.drop("SaveFilePartRequest", times=2)
    telegram.fake.drop("GetFileRequest", times=2)
    locator, data = put(store, 2 * MiB)
    assert store.get(locator, 0, 2 * MiB) == data


def test_errors_that_persist_end_in_a_store_error(telegram: TelegramRig) -> None:
    store = telegram.open_store(retries=2)
    telegram.fake.drop("SaveFilePartRequest", times=50)
    with pytest.raises(StoreError):
        put(store, 1000)
    telegram.fake.clear_faults()
    assert telegram.fake.messages(telegram.channel) == []  # nothing half-sent


def test_a_lost_send_confirmation_leaves_exactly_one_message(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    telegram.fake.lose_confirmation("SendMediaRequest")
    locator, data = put(store, 100_000)
    assert store.get(locator, 0, len(data)) == data
    assert [m.id for m in telegram.fake.messages(telegram.channel)] == [int(locator)]


def test_messages_deleted_behind_our_back_are_missing_chunks(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    locator, _ = put(store, 10_000)
    store.get(locator, 0, 1)  # cached
    telegram.fake.delete_behind(telegram.channel, [int(locator)])
    with pytest.raises(ChunkMissing):
        store.get(locator, 0, 10)
    assert not store.exists(locator)


def test_deletes_go_in_batches_of_100(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    locators = [put(store, 10)[0] for _ in range(150)]
    telegram.fake.reset_stats()
    store.delete_many(locators)
    assert telegram.fake.requests["DeleteMessagesRequest"] == 2
    assert telegram.fake.messages(telegram.channel) == []


def test_uploads_and_reads_keep_several_requests_in_flight(telegram: TelegramRig) -> None:
    telegram.fake.latency = 0.05
    store = telegram.open_store(parallelism=6)
    locator, data = put(store, 6 * MiB)
    assert telegram.fake.max_in_flight >= 5
    telegram.fake.max_in_flight = 0
    assert store.get(locator, 0, 6 * MiB) == data
    assert telegram.fake.max_in_flight >= 5


def test_several_accounts_share_the_load(telegram: TelegramRig) -> None:
    bot = telegram.fake.add_bot("777000:secret")
    telegram.fake.set_admin(telegram.channel, bot, {"post", "delete"})
    telegram.sign_in(bot)
    store = telegram.open_store()
    for _ in range(4):
        locator, data = put(store, 1000)
        assert store.get(locator, 0, 1000) == data
    senders = {m.sender_id for m in telegram.fake.messages(telegram.channel)}
    assert senders == {telegram.user.id, bot.id}


def test_bots_cannot_list_the_channel_and_say_so(telegram: TelegramRig) -> None:
    bot = telegram.fake.add_bot("777001:secret")
    telegram.fake.set_admin(telegram.channel, bot, {"post", "delete"})
    for path in (telegram.data_dir / "telegram").glob("user-*"):
        path.unlink()
    telegram.sign_in(bot)
    store = telegram.open_store()
    with pytest.raises(StoreError, match="user session"):
        list(store.iter_chunks())


def test_listing_pages_through_a_long_channel(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    stored = {put(store, 10 + i)[0] for i in range(230)}
    telegram.fake.inject("GetHistoryRequest", "FLOOD_WAIT_1")  # recovery waits it out
    assert {locator for locator, _ in store.iter_chunks()} == stored


def test_saved_messages_are_one_accounts_own(telegram: TelegramRig) -> None:
    second = telegram.fake.add_user("+15550009")
    telegram.sign_in(second)
    with pytest.raises(ConfigError, match="Saved Messages"):
        telegram.open_store(channel="me")


def test_a_revoked_session_is_one_clear_error(telegram: TelegramRig) -> None:
    store = telegram.open_store()
    locator, _ = put(store, 1000)
    telegram.fake.revoke(telegram.user)
    with pytest.raises(StoreError, match="davfs login"):
        store.get(locator, 0, 10)
