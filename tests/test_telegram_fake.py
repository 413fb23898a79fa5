"""Tests of the wire-level fake Telegram (davfs/testing/telegram_fake.py).

They drive the fake only through telethon's public API (plus raw TL requests
where telethon itself never breaks a rule), so they also pin down the telethon
behaviour the Telegram chunk store relies on: flood-wait sleeping, part sizes,
the download iterators' offsets and file-reference refreshes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from telethon import errors, types
from telethon.tl import functions

from davfs.testing.telegram_fake import (
    DEFAULT_API_HASH,
    DEFAULT_API_ID,
    FakeAccount,
    FakeChannel,
    FakeTelegram,
    FakeTelegramClient,
    KiB,
    MiB,
)

T = TypeVar("T")
PHONE = "+1 555 0100"


def run(coro: Awaitable[T]) -> T:
    """Each test gets a fresh event loop, as code under test would on its own thread."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


@dataclass
class World:
    """A server with a private channel: alice creates it, bob only reads, the bot may post."""

    fake: FakeTelegram
    alice: FakeAccount
    bob: FakeAccount
    carol: FakeAccount
    bot: FakeAccount
    channel: FakeChannel

    def peer(self, account: FakeAccount) -> types.InputPeerChannel:
        return self.fake.input_peer(self.channel, account)


def make_world(**server: Any) -> World:
    fake = FakeTelegram(**server)
    alice = fake.add_user(PHONE)
    bob = fake.add_user("+1 555 0101")
    carol = fake.add_user("+1 555 0102")
    bot = fake.add_bot("777000111:secret")
    channel = fake.add_channel("chunks", creator=alice, admins={bot: {"post"}}, members=[bob])
    return World(fake, alice, bob, carol, bot, channel)


@pytest.fixture
def world() -> Iterator[World]:
    yield make_world()


async def connected(
    fake: FakeTelegram, account: FakeAccount | None = None, **kwargs: Any
) -> FakeTelegramClient:
    client = fake.client(account, **kwargs)
    await client.connect()
    return client


async def send_chunk(
    client: FakeTelegramClient, peer: Any, data: bytes, *, caption: str = "", part_size_kb: int = 512
) -> types.Message:
    """The upload pattern the chunk store uses: explicit part size, then send as a document."""
    handle = await client.upload_file(
        io.BytesIO(data), file_size=len(data), file_name="chunk.bin", part_size_kb=part_size_kb
    )
    return await client.send_file(
        peer, handle, force_document=True, caption=caption, mime_type="application/octet-stream"
    )


async def download(client: FakeTelegramClient, media: Any, **kwargs: Any) -> bytes:
    return b"".join([bytes(chunk) async for chunk in client.iter_download(media, **kwargs)])


def uploaded_document(
    file_id: int, parts: int, *, big: bool = False, md5: str = ""
) -> types.InputMediaUploadedDocument:
    """Raw media for tests that break rules telethon never breaks itself."""
    input_file: Any = (
        types.InputFileBig(file_id, parts, "c.bin") if big else types.InputFile(file_id, parts, "c.bin", md5)
    )
    return types.InputMediaUploadedDocument(
        file=input_file,
        mime_type="application/octet-stream",
        attributes=[types.DocumentAttributeFilename("c.bin")],
        force_file=True,
    )


def send_media(peer: Any, media: Any, *, random_id: int | None = None, caption: str = "") -> Any:
    return functions.messages.SendMediaRequest(
        peer, media, message=caption, random_id=random_id if random_id is not None else random.getrandbits(63)
    )


# ---------------------------------------------------------------------------
# Round trips


def test_3mib_chunk_round_trip_uses_six_512k_parts(world: World) -> None:
    data = os.urandom(3 * MiB)

    async def body() -> None:
        client = await connected(world.fake, world.alice)
        message = await send_chunk(client, world.peer(world.alice), data, caption="blake3:abc")
        assert message.id == 1
        assert message.media.document.size == len(data)
        assert world.fake.requests["SaveFilePartRequest"] == 6
        [fetched] = await client.get_messages(world.peer(world.alice), ids=[message.id])
        assert fetched.message == "blake3:abc"
        assert await download(client, fetched.media.document) == data
        await client.disconnect()

    run(body())
    [stored] = world.fake.messages(world.channel)
    assert stored.data == data and stored.sender_id == world.alice.id


def test_12mib_upload_uses_big_file_parts(world: World) -> None:
    data = os.urandom(12 * MiB)

    async def body() -> None:
        async with world.fake.client(world.alice) as client:  # start(): already authorized
            message = await send_chunk(client, world.peer(world.alice), data)
            assert world.fake.stored_bytes() == len(data)  # parts were consumed by SendMedia
            assert await client.download_media(message, file=bytes) == data

    run(body())
    assert world.fake.requests["SaveBigFilePartRequest"] == 24
    assert world.fake.requests["SaveFilePartRequest"] == 0


def test_saved_messages_via_me(world: World) -> None:
    data = os.urandom(300 * KiB)

    async def body() -> list[int]:
        client = await connected(world.fake, world.alice)
        first = await send_chunk(client, "me", data, caption="one")
        second = await send_chunk(client, "me", data[:1000], caption="two")
        [fetched] = await client.get_messages("me", ids=[first.id])
        assert await client.download_media(fetched, file=bytes) == data
        ids = [m.id async for m in client.iter_messages("me")]
        await client.disconnect()
        assert (first.id, second.id) == (1, 2)
        return ids

    assert run(body()) == [2, 1]
    assert [m.text for m in world.fake.messages(world.alice)] == ["one", "two"]
    assert world.fake.messages(world.channel) == []


def test_download_media_refreshes_an_expired_reference_but_iter_download_does_not(world: World) -> None:
    data = os.urandom(600 * KiB)

    async def body() -> None:
        client = await connected(world.fake, world.alice)
        message = await send_chunk(client, world.peer(world.alice), data)
        world.fake.expire_file_references()
        with pytest.raises(errors.FileReferenceExpiredError):
            await download(client, message.media.document)
        fetches = world.fake.requests["GetMessagesRequest"]
        assert await client.download_media(message, file=bytes) == data
        assert world.fake.requests["GetMessagesRequest"] == fetches + 1
        [fresh] = await client.get_messages(world.peer(world.alice), ids=[message.id])
        assert fresh.media.document.file_reference != message.media.document.file_reference
        assert await download(client, fresh.media.document) == data
        await client.disconnect()

    run(body())


def test_deleted_message_is_gone_and_its_file_unreadable(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        peer = world.peer(world.alice)
        message = await send_chunk(client, peer, b"x" * 5000)
        [affected] = await client.delete_messages(peer, [message.id])
        assert affected.pts_count == 1
        assert await client.get_messages(peer, ids=[message.id]) == [None]
        with pytest.raises(errors.FileReferenceExpiredError):
            await download(client, message.media.document)
        await client.disconnect()

    run(body())
    assert world.fake.message(world.channel, 1) is None


def test_iter_messages_order_and_messages_deleted_behind_the_clients_back(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        peer = world.peer(world.alice)
        for n in range(1, 6):
            assert (await client.send_message(peer, f"m{n}")).id == n
        assert [m.id async for m in client.iter_messages(peer)] == [5, 4, 3, 2, 1]
        # wait_time=0: telethon otherwise sleeps 1 s between pages of an unlimited iteration.
        assert [m.id async for m in client.iter_messages(peer, reverse=True, wait_time=0)] == [1, 2, 3, 4, 5]
        assert [m.id async for m in client.iter_messages(peer, limit=2)] == [5, 4]
        world.fake.delete_behind(world.channel, [3])
        assert [m.text async for m in client.iter_messages(peer)] == ["m5", "m4", "m2", "m1"]
        assert await client.get_messages(peer, ids=[2, 3]) == [await client.get_messages(peer, ids=2), None]
        assert (await client.send_message(peer, "m6")).id == 6  # ids are never reused
        await client.disconnect()

    run(body())


def test_range_read_fetches_only_the_blocks_it_covers(world: World) -> None:
    data = os.urandom(3 * MiB)

    async def body() -> bytes:
        # receive_updates=False wraps every request in invokeWithoutUpdates.
        client = await connected(world.fake, world.alice, receive_updates=False)
        message = await send_chunk(client, world.peer(world.alice), data)
        world.fake.reset_stats()
        got = await download(client, message.media.document, offset=MiB, request_size=128 * KiB, limit=2)
        await client.disconnect()
        return got

    assert run(body()) == data[MiB : MiB + 256 * KiB]
    assert world.fake.getfile_log == [(MiB, 128 * KiB), (MiB + 128 * KiB, 128 * KiB)]


def test_document_on_another_dc_is_read_through_an_exported_sender() -> None:
    world = make_world(media_dc_id=4)
    data = os.urandom(700 * KiB)

    async def body() -> None:
        client = await connected(world.fake, world.alice)
        message = await send_chunk(client, world.peer(world.alice), data)
        assert message.media.document.dc_id == 4
        assert await download(client, message.media.document) == data
        await client.disconnect()

    run(body())
    assert world.fake.requests["ExportAuthorizationRequest"] == 1
    assert world.fake.requests["ImportAuthorizationRequest"] == 1


def test_latency_and_bandwidth_overlap_like_real_requests(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        message = await send_chunk(client, world.peer(world.alice), os.urandom(256 * KiB))
        world.fake.latency = 0.2
        world.fake.reset_stats()
        start = time.monotonic()
        await asyncio.gather(*(client(functions.updates.GetStateRequest()) for _ in range(5)))
        elapsed = time.monotonic() - start
        assert 0.2 <= elapsed < 0.6
        assert world.fake.max_in_flight == 5
        world.fake.latency = 0.0
        world.fake.bandwidth = MiB
        start = time.monotonic()
        await download(client, message.media.document)
        assert time.monotonic() - start >= 0.25
        await client.disconnect()

    run(body())


# ---------------------------------------------------------------------------
# Telegram's rules


def test_a_384k_part_size_passes_telethon_but_not_telegram(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        with pytest.raises(errors.FilePartSizeInvalidError):
            await client.upload_file(io.BytesIO(bytes(3 * MiB)), file_size=3 * MiB, part_size_kb=384)
        # A single part may have any size: it is the last one.
        handle = await client.upload_file(io.BytesIO(bytes(384 * KiB)), file_size=384 * KiB, part_size_kb=384)
        assert (await client.send_file(world.peer(world.alice), handle, force_document=True)).id == 1
        await client.disconnect()

    run(body())


def test_getfile_offset_and_limit_rules(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        message = await send_chunk(client, world.peer(world.alice), os.urandom(3 * MiB))
        document = message.media.document
        location = types.InputDocumentFileLocation(
            document.id, document.access_hash, document.file_reference, ""
        )
        with pytest.raises(errors.OffsetInvalidError):
            await client(functions.upload.GetFileRequest(location, offset=1000, limit=4096))
        with pytest.raises(errors.LimitInvalidError):
            await client(functions.upload.GetFileRequest(location, offset=0, limit=5 * 4096))
        with pytest.raises(errors.LimitInvalidError):
            await client(functions.upload.GetFileRequest(location, offset=MiB - 4096, limit=8192))
        beyond = await client(functions.upload.GetFileRequest(location, offset=4 * MiB, limit=4096))
        assert beyond.bytes == b""
        # telethon's direct iterator takes offset=12288 unaligned to the request size and
        # its second request crosses the 1 MiB boundary.
        with pytest.raises(errors.LimitInvalidError):
            await download(client, document, offset=12288)
        await client.disconnect()

    run(body())


def test_caption_limit_counts_utf16_units_and_premium_doubles_it(world: World) -> None:
    premium = world.fake.add_user("+1 555 0199", premium=True)
    world.fake.set_admin(world.channel, premium, {"post"})

    async def body() -> None:
        client = await connected(world.fake, world.alice)
        with pytest.raises(errors.MediaCaptionTooLongError):
            await send_chunk(client, world.peer(world.alice), b"data", caption="\U0001f600" * 513)
        assert (await send_chunk(client, world.peer(world.alice), b"data", caption="x" * 1024)).id == 1
        rich = await connected(world.fake, premium)
        assert (
            await send_chunk(rich, world.fake.input_peer(world.channel, premium), b"d", caption="x" * 4096)
        ).id == 2
        await client.disconnect()
        await rich.disconnect()

    run(body())


def test_posting_needs_the_post_right(world: World) -> None:
    public = world.fake.add_channel("public", username="davfs_public", creator=world.alice)

    async def body() -> None:
        bob = await connected(world.fake, world.bob)
        with pytest.raises(errors.ChatAdminRequiredError):
            await send_chunk(bob, world.peer(world.bob), b"data")
        carol = await connected(world.fake, world.carol)
        with pytest.raises(errors.ChannelPrivateError):
            await carol.send_message(world.peer(world.carol), "hi")
        with pytest.raises(errors.ChatWriteForbiddenError):
            await carol.send_message(world.fake.input_peer(public, world.carol), "hi")
        bot = await connected(world.fake, world.bot)
        assert (await send_chunk(bot, world.peer(world.bot), b"data")).id == 1
        await asyncio.gather(bob.disconnect(), carol.disconnect(), bot.disconnect())

    run(body())


def test_channel_access_hashes_are_per_account(world: World) -> None:
    async def body() -> None:
        alice = await connected(world.fake, world.alice)
        with pytest.raises(errors.ChannelInvalidError):
            await alice.get_messages(world.peer(world.bob), ids=[1])  # bob's hash, not alice's
        with pytest.raises(ValueError):
            await alice.get_entity(types.PeerChannel(world.channel.id))  # users may not pass hash 0
        bot = await connected(world.fake, world.bot)
        entity = await bot.get_entity(types.PeerChannel(world.channel.id))  # bots may
        assert entity.access_hash == world.fake.channel_hash(world.channel, world.bot)
        assert (await bot.send_message(world.channel.marked_id, "by marked id")).id == 1
        await asyncio.gather(alice.disconnect(), bot.disconnect())

    run(body())


def test_bots_cannot_page_history(world: World) -> None:
    async def body() -> None:
        bot = await connected(world.fake, world.bot)
        await bot.send_message(world.peer(world.bot), "hello")
        with pytest.raises(errors.BotMethodInvalidError):
            await bot.get_messages(world.peer(world.bot), limit=10)
        [message] = await bot.get_messages(world.peer(world.bot), ids=[1])  # by id is fine
        assert message.message == "hello"
        await bot.disconnect()

    run(body())


def test_bot_posting_rate_per_channel() -> None:
    now = [1000.0]
    world = make_world(bot_posts_per_minute=3, clock=lambda: now[0])

    async def body() -> None:
        bot = await connected(world.fake, world.bot, flood_sleep_threshold=0)
        for _ in range(3):
            await bot.send_message(world.peer(world.bot), "x")
            now[0] += 10
        with pytest.raises(errors.FloodWaitError) as flood:
            await bot.send_message(world.peer(world.bot), "x")
        assert flood.value.seconds == 30
        now[0] += 30
        # telethon now refuses SendMessage locally for 30 real seconds; a new client does not.
        other = await connected(world.fake, world.bot, flood_sleep_threshold=0)
        assert (await other.send_message(world.peer(world.bot), "y")).id == 4
        await asyncio.gather(bot.disconnect(), other.disconnect())

    run(body())


def test_upload_part_rules(world: World) -> None:
    premium = world.fake.add_user("+1 555 0199", premium=True)
    part = os.urandom(512 * KiB)

    async def body() -> None:
        client = await connected(world.fake, world.alice)
        peer = world.peer(world.alice)
        await client(functions.upload.SaveFilePartRequest(1, 0, part))
        await client(functions.upload.SaveFilePartRequest(1, 2, part[:10]))
        with pytest.raises(errors.FilePartMissingError) as missing:
            await client(send_media(peer, uploaded_document(1, 3)))
        assert missing.value.which == 1
        await client(functions.upload.SaveFilePartRequest(2, 0, part))
        with pytest.raises(errors.Md5ChecksumInvalidError):
            await client(send_media(peer, uploaded_document(2, 1, md5="0" * 32)))
        good = uploaded_document(2, 1, md5=hashlib.md5(part).hexdigest())
        assert isinstance(await client(send_media(peer, good)), types.Updates)
        with pytest.raises(errors.FilePartTooBigError):
            await client(functions.upload.SaveFilePartRequest(3, 0, part + b"x"))
        await client(functions.upload.SaveFilePartRequest(4, 0, part[: 256 * KiB]))
        with pytest.raises(errors.FilePartSizeChangedError):
            await client(functions.upload.SaveFilePartRequest(4, 1, part))
        with pytest.raises(errors.FilePartsInvalidError):
            await client(functions.upload.SaveBigFilePartRequest(5, 4000, 8000, part[:KiB]))
        await client(functions.upload.SaveBigFilePartRequest(6, 0, 3, part))
        with pytest.raises(errors.FilePartsInvalidError):
            await client(functions.upload.SaveBigFilePartRequest(6, 1, 4, part))
        rich = await connected(world.fake, premium)
        assert await rich(functions.upload.SaveBigFilePartRequest(5, 4000, 8000, part[:KiB]))
        await asyncio.gather(client.disconnect(), rich.disconnect())

    run(body())


def test_streamed_upload_declares_its_total_on_the_last_part(world: World) -> None:
    part = os.urandom(512 * KiB)

    async def body() -> None:
        client = await connected(world.fake, world.alice)
        peer = world.peer(world.alice)
        for index, total, data in ((0, -1, part), (1, -1, part), (2, 3, b"tail")):
            await client(functions.upload.SaveBigFilePartRequest(7, index, total, data))
        await client(send_media(peer, uploaded_document(7, 3, big=True)))
        await client(functions.upload.SaveBigFilePartRequest(8, 0, -1, part))
        with pytest.raises(errors.FilePartsInvalidError):  # the total was never declared
            await client(send_media(peer, uploaded_document(8, 1, big=True)))
        await client.disconnect()

    run(body())
    assert world.fake.messages(world.channel)[0].data == part + part + b"tail"


def test_random_id_is_single_use(world: World) -> None:
    async def body() -> None:
        # telethon files RANDOM_ID_DUPLICATE under ServerError and would retry it for 10 s.
        client = await connected(world.fake, world.alice, request_retries=0, raise_last_call_error=True)
        peer = world.peer(world.alice)
        for attempt in range(2):
            handle = await client.upload_file(io.BytesIO(b"data"), file_size=4, file_name="c.bin")
            request = send_media(peer, uploaded_document(handle.id, 1, md5=handle.md5_checksum), random_id=42)
            if attempt == 0:
                await client(request)
            else:
                with pytest.raises(errors.RandomIdDuplicateError):
                    await client(request)
        await client.disconnect()

    run(body())
    assert len(world.fake.messages(world.channel)) == 1


def test_delete_rights_and_id_count(world: World) -> None:
    async def body() -> None:
        alice = await connected(world.fake, world.alice)
        bot = await connected(world.fake, world.bot)
        await alice.send_message(world.peer(world.alice), "by alice")
        await bot.send_message(world.peer(world.bot), "by bot")
        with pytest.raises(errors.MessageDeleteForbiddenError):
            await bot.delete_messages(world.peer(world.bot), [1])
        [affected] = await bot.delete_messages(world.peer(world.bot), [2])
        assert affected.pts_count == 1
        with pytest.raises(errors.BadRequestError, match="MESSAGE_IDS_TOO_MUCH"):
            await alice(
                functions.channels.DeleteMessagesRequest(world.peer(world.alice), list(range(1, 102)))
            )
        results = await alice.delete_messages(world.peer(world.alice), list(range(1, 151)))
        assert [r.pts_count for r in results] == [1, 0]  # telethon splits into requests of 100
        await asyncio.gather(alice.disconnect(), bot.disconnect())

    run(body())
    assert world.fake.messages(world.channel) == []


def test_entities_by_username_invite_and_participant(world: World) -> None:
    world.fake.add_channel("public", username="davfs_public", creator=world.bob)
    private = world.fake.add_channel("private", invite_hash="AbCdEfGh", creator=world.bob)

    async def body() -> None:
        client = await connected(world.fake, world.alice)
        assert (await client.get_entity("davfs_public")).title == "public"
        with pytest.raises(ValueError):
            await client.get_entity("nobody_here")
        with pytest.raises(ValueError, match="not part of"):
            await client.get_entity("https://t.me/+AbCdEfGh")
        await client(functions.messages.ImportChatInviteRequest("AbCdEfGh"))
        bot = await connected(world.fake, world.bot)
        with pytest.raises(errors.BotMethodInvalidError):  # bots cannot join by invite link
            await bot(functions.messages.ImportChatInviteRequest("AbCdEfGh"))
        assert (await client.get_entity("https://t.me/+AbCdEfGh")).id == private.id
        with pytest.raises(errors.InviteHashInvalidError):
            await client(functions.messages.CheckChatInviteRequest("nope"))
        world.fake.expire_invite(private)
        with pytest.raises(errors.InviteHashExpiredError):
            await client(functions.messages.CheckChatInviteRequest("AbCdEfGh"))
        mine = await client.get_permissions(world.peer(world.alice), "me")
        assert mine.is_creator and mine.post_messages
        rights = await bot.get_permissions(world.peer(world.bot), "me")
        assert rights.post_messages and not rights.delete_messages
        await asyncio.gather(client.disconnect(), bot.disconnect())

    run(body())
    assert world.alice.id in private.members


# ---------------------------------------------------------------------------
# Faults and telethon's reaction to them


def test_short_flood_wait_is_slept_by_telethon(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        before = world.fake.requests["GetStateRequest"]
        world.fake.inject("GetStateRequest", "FLOOD_WAIT_1", account=world.bob)  # someone else's
        world.fake.inject(functions.updates.GetStateRequest, "FLOOD_WAIT_1", account=world.alice)
        start = time.monotonic()
        await client(functions.updates.GetStateRequest())
        assert time.monotonic() - start >= 1.0
        assert world.fake.requests["GetStateRequest"] == before + 2
        await client.disconnect()

    run(body())


def test_long_flood_wait_raises_and_blocks_the_request_type(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice, flood_sleep_threshold=5)
        world.fake.inject("GetState", "FLOOD_WAIT_30")
        start = time.monotonic()
        with pytest.raises(errors.FloodWaitError) as flood:
            await client(functions.updates.GetStateRequest())
        assert flood.value.seconds == 30 and time.monotonic() - start < 1
        sent = world.fake.requests["GetStateRequest"]
        with pytest.raises(errors.FloodWaitError):
            await client(functions.updates.GetStateRequest())  # refused by telethon itself
        assert world.fake.requests["GetStateRequest"] == sent
        client.flood_sleep_threshold = 0
        world.fake.inject("GetUsersRequest", "FLOOD_PREMIUM_WAIT_5")
        with pytest.raises(errors.FloodPremiumWaitError):
            await client(functions.users.GetUsersRequest([types.InputUserSelf()]))
        await client.disconnect()

    run(body())


def test_lost_confirmation_leaves_the_message_stored(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        world.fake.lose_confirmation("SendMediaRequest")
        with pytest.raises(ConnectionError):
            await send_chunk(client, world.peer(world.alice), b"data")
        await client.disconnect()

    run(body())
    [stored] = world.fake.messages(world.channel)
    assert stored.data == b"data"


def test_dropped_request_raises_and_stores_nothing(world: World) -> None:
    async def body() -> None:
        client = await connected(world.fake, world.alice)
        world.fake.drop("SendMediaRequest")
        with pytest.raises(ConnectionError):
            await send_chunk(client, world.peer(world.alice), b"data")
        assert world.fake.messages(world.channel) == []
        world.fake.inject("GetFileRequest", "RPC_CALL_FAIL")
        message = await send_chunk(client, world.peer(world.alice), b"data")
        assert await download(client, message.media.document) == b"data"  # telethon retried
        await client.disconnect()

    run(body())
    assert world.fake.requests["GetFileRequest"] == 2


def test_random_faults_are_seeded_and_clearable() -> None:
    def pattern() -> list[bool]:
        world = make_world()

        async def body() -> list[bool]:
            client = await connected(world.fake, world.alice)
            world.fake.random_faults(0.5, seed=7, kinds=("drop",), requests=["GetStateRequest"])
            outcomes = []
            for _ in range(20):
                try:
                    await client(functions.updates.GetStateRequest())
                    outcomes.append(True)
                except ConnectionError:
                    outcomes.append(False)
            world.fake.clear_faults()
            await client(functions.updates.GetStateRequest())
            await client.disconnect()
            return outcomes

        return run(body())

    first = pattern()
    assert first == pattern()
    assert 3 < first.count(False) < 17


# ---------------------------------------------------------------------------
# Login, sessions, loops


def test_wrong_api_id_or_hash_is_rejected() -> None:
    fake = FakeTelegram()
    alice = fake.add_user(PHONE)

    async def body() -> None:
        wrong_id = fake.client(alice, api_id=999)
        with pytest.raises(errors.ApiIdInvalidError):
            await wrong_id.connect()
        with pytest.raises(errors.ApiIdInvalidError):
            await wrong_id(functions.updates.GetStateRequest())
        wrong_hash = fake.client(api_hash="f" * 32)
        await wrong_hash.connect()
        with pytest.raises(errors.ApiIdInvalidError):
            await wrong_hash.send_code_request(PHONE)

        def factory(session: Any, api_id: int, api_hash: str) -> FakeTelegramClient:
            """How code under test builds its clients: telethon's constructor signature."""
            return FakeTelegramClient(session, api_id, api_hash, server=fake)

        good = factory(fake.authorized_session(alice), DEFAULT_API_ID, DEFAULT_API_HASH)
        await good.connect()
        assert (await good.get_me()).id == alice.id
        await asyncio.gather(wrong_id.disconnect(), wrong_hash.disconnect(), good.disconnect())

    run(body())


def test_login_with_code_and_a_saved_session() -> None:
    fake = FakeTelegram()
    alice = fake.add_user(PHONE, first_name="Alice")

    async def login() -> str:
        client = await connected(fake)
        assert not await client.is_user_authorized()
        with pytest.raises(errors.PhoneNumberInvalidError):
            await client.send_code_request("+1 555 9999")
        await client.send_code_request(PHONE)
        code = fake.last_code(PHONE)
        with pytest.raises(errors.PhoneCodeInvalidError):
            await client.sign_in(PHONE, f"{(int(code) + 1) % 100_000:05d}")
        me = await client.sign_in(PHONE, code)
        assert me.id == alice.id and me.first_name == "Alice"
        saved: str = client.session.save()
        await client.disconnect()
        return saved

    saved = run(login())

    async def reuse() -> None:
        client = await connected(fake, session=saved)
        assert await client.is_user_authorized()
        assert (await client.get_me()).phone == alice.phone
        await client.disconnect()

    run(reuse())


def test_login_with_two_factor_password() -> None:
    fake = FakeTelegram()
    alice = fake.add_user(PHONE, password="correct horse")

    async def body() -> None:
        client = await connected(fake)
        await client.send_code_request(PHONE)
        with pytest.raises(errors.SessionPasswordNeededError):
            await client.sign_in(PHONE, fake.last_code(PHONE))
        assert not await client.is_user_authorized()
        with pytest.raises(errors.PasswordHashInvalidError):
            await client.sign_in(password="battery staple")
        me = await client.sign_in(password="correct horse")
        assert me.id == alice.id
        await client.disconnect()
        # telethon's interactive start() drives the same steps.
        other = fake.client()
        await other.start(phone=PHONE, password="correct horse", code_callback=lambda: fake.last_code(PHONE))
        assert (await other.get_me()).id == alice.id
        await other.disconnect()

    run(body())


def test_login_with_bot_token() -> None:
    fake = FakeTelegram()
    bot = fake.add_bot("4242:token")

    async def body() -> None:
        client = await connected(fake)
        with pytest.raises(errors.AccessTokenInvalidError):
            await client.sign_in(bot_token="4242:wrong")
        await client.start(bot_token="4242:token")
        assert await client.is_bot()
        assert (await client.get_me()).id == bot.id
        await client.disconnect()

    run(body())


def test_revoked_and_logged_out_keys_are_unregistered(world: World) -> None:
    async def body() -> None:
        alice = await connected(world.fake, world.alice)
        saved = alice.session.save()
        world.fake.revoke(world.alice)
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await alice(functions.updates.GetStateRequest())
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await alice.upload_file(io.BytesIO(b"data"), file_size=4)
        again = await connected(world.fake, session=saved)
        assert not await again.is_user_authorized()
        bob = await connected(world.fake, world.bob)
        world.fake.revoke_key(bob.session.auth_key)
        with pytest.raises(errors.AuthKeyUnregisteredError):
            await bob(functions.updates.GetStateRequest())
        carol = await connected(world.fake, world.carol)
        carol_saved = carol.session.save()
        assert await carol.log_out()
        carol_again = await connected(world.fake, session=carol_saved)
        assert not await carol_again.is_user_authorized()
        await asyncio.gather(
            alice.disconnect(), again.disconnect(), bob.disconnect(), carol_again.disconnect()
        )

    run(body())


def test_client_built_off_loop_serves_its_loop_thread_and_refuses_another_loop(world: World) -> None:
    client = world.fake.client(world.alice)  # built on the test thread, outside any loop
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(factory: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(main(), loop).result(timeout=10)

    try:
        on_loop(client.connect)
        data = os.urandom(100 * KiB)
        message = on_loop(lambda: send_chunk(client, world.peer(world.alice), data))
        stored = world.fake.message(world.channel, message.id)  # inspected from this thread
        assert stored is not None and stored.data == data
        with pytest.raises(RuntimeError, match="event loop must not change"):
            run(client.get_me())
        assert on_loop(client.get_me).id == world.alice.id
        on_loop(client.disconnect)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
