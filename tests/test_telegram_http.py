"""The WebDAV server on the Telegram store (wire-level fake): faults end in a retried
success or a clean HTTP error, never a wrong byte, never a committed file whose chunks
are missing, never an orphan message; and the channel alone rebuilds the catalog."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import requests

from davfs.catalog import Catalog
from davfs.fsck import fsck
from davfs.manifest import recover
from tests.conftest import MiB, RunningServer
from tests.telegram_rig import TelegramRig
from tests.test_recover import build_history, tree_of

Start = Callable[..., RunningServer]


def serve(telegram: TelegramRig, start_server: Start, **davfs: object) -> RunningServer:
    return start_server(store=telegram.open_store(), chunk_size="1MiB", **davfs)


def serve_direct(telegram: TelegramRig, start_server: Start, **davfs: object) -> RunningServer:
    """Without write-back: an upload talks to Telegram before it is answered, so what
    Telegram does reaches the client (with write-back it reaches the shipper)."""
    return serve(telegram, start_server, write_back=False, **davfs)


def referenced_messages(running: RunningServer) -> set[int]:
    """Message ids the catalog points at (data chunks and manifests)."""
    catalog = running.app.drive.catalog
    with catalog.db.engine.connect() as conn:
        return {int(row[0]) for row in conn.exec_driver_sql("SELECT locator FROM chunks")}


def channel_messages(telegram: TelegramRig) -> set[int]:
    return {m.id for m in telegram.fake.messages(telegram.channel)}


def test_put_and_get_ride_out_short_faults(telegram: TelegramRig, start_server: Start) -> None:
    running = serve_direct(telegram, start_server)
    body = os.urandom(3 * MiB + 77)
    telegram.fake.drop("SaveFilePartRequest", times=2)
    telegram.fake.inject("SendMediaRequest", "FLOOD_WAIT_1")
    telegram.fake.inject("SaveFilePartRequest", "RPC_CALL_FAIL")
    assert requests.put(running.url + "f.bin", data=body).status_code == 201
    telegram.fake.drop("GetFileRequest", times=3)
    telegram.fake.inject("GetFileRequest", "FLOOD_WAIT_1", times=2)
    telegram.fake.expire_file_references()
    response = requests.get(running.url + "f.bin")
    assert response.status_code == 200 and response.content == body
    ranged = requests.get(running.url + "f.bin", headers={"Range": "bytes=1048570-2097160"})
    assert ranged.status_code == 206 and ranged.content == body[1048570:2097161]


def test_a_long_flood_wait_is_503_with_retry_after_and_commits_nothing(
    telegram: TelegramRig, start_server: Start
) -> None:
    running = serve_direct(telegram, start_server)
    requests.put(running.url + "f.bin", data=b"old").raise_for_status()
    telegram.fake.inject("SendMediaRequest", "FLOOD_WAIT_300")
    response = requests.put(running.url + "f.bin", data=os.urandom(MiB))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "300"
    assert requests.get(running.url + "f.bin").content == b"old"

    telegram.fake.inject("GetFileRequest", "FLOOD_WAIT_300")
    response = requests.get(running.url + "f.bin")
    assert response.status_code == 503 and response.headers["Retry-After"] == "300"


def test_a_failing_upload_leaves_the_old_version(telegram: TelegramRig, start_server: Start) -> None:
    running = serve_direct(telegram, start_server)
    requests.put(running.url + "f.bin", data=b"old").raise_for_status()
    telegram.fake.drop("SaveFilePartRequest", times=1000)
    response = requests.put(running.url + "f.bin", data=os.urandom(2 * MiB))
    assert response.status_code >= 500
    telegram.fake.clear_faults()
    assert requests.get(running.url + "f.bin").content == b"old"
    assert requests.get(running.url + "new.bin").status_code == 404


def test_a_lost_send_confirmation_leaves_no_orphan(telegram: TelegramRig, start_server: Start) -> None:
    running = serve_direct(telegram, start_server)
    telegram.fake.lose_confirmation("SendMediaRequest", times=2)
    body = os.urandom(2 * MiB + 1)
    assert requests.put(running.url + "f.bin", data=body).status_code == 201
    assert requests.get(running.url + "f.bin").content == body
    running.app.drive.manifests.flush()
    assert channel_messages(telegram) == referenced_messages(running)


def test_the_same_content_is_posted_once(telegram: TelegramRig, start_server: Start) -> None:
    running = serve(telegram, start_server)
    body = os.urandom(2 * MiB)
    for name in ("a.bin", "b.bin", "a.bin"):
        assert requests.put(running.url + name, data=body).status_code in (201, 204)
    running.ship()
    documents = [m for m in telegram.fake.messages(telegram.channel) if m.document is not None]
    assert len(documents) == 2  # two 1 MiB chunks, stored once for three PUTs
    assert requests.get(running.url + "b.bin").content == body


def test_messages_deleted_behind_our_back_give_an_error_not_wrong_bytes(
    telegram: TelegramRig, start_server: Start
) -> None:
    running = serve(telegram, start_server)
    body = os.urandom(3 * MiB)
    requests.put(running.url + "f.bin", data=body).raise_for_status()
    running.ship()
    telegram.fake.delete_behind(telegram.channel, channel_messages(telegram))
    response = requests.get(running.url + "f.bin")
    assert response.status_code >= 500
    assert body[:100] not in response.content


def test_random_faults_never_yield_a_wrong_byte_or_a_broken_file(
    telegram: TelegramRig, start_server: Start
) -> None:
    """Bounded: 24 PUT/GET rounds with 15 % of requests failing (drops, lost
    confirmations, short flood waits)."""
    running = serve_direct(telegram, start_server)
    rng = random.Random(7)
    committed: dict[str, str] = {}
    telegram.fake.random_faults(0.15, seed=11, kinds=("drop", "lose", "flood"))
    for round_number in range(24):
        name = f"f{rng.randrange(6)}.bin"
        body = rng.randbytes(rng.choice([0, 1, 5000, MiB, 2 * MiB + 3]))
        put = requests.put(running.url + name, data=body)
        assert put.status_code in (201, 204) or put.status_code >= 500, put.status_code
        if put.status_code < 300:
            committed[name] = hashlib.sha256(body).hexdigest()
        got = requests.get(running.url + name)
        if got.status_code == 200 and name in committed:
            assert hashlib.sha256(got.content).hexdigest() == committed[name], round_number
    telegram.fake.clear_faults()
    for name, digest in committed.items():
        got = requests.get(running.url + name)
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == digest
    running.app.drive.manifests.flush()
    assert channel_messages(telegram) >= referenced_messages(running)
    assert fsck(running.app.drive.catalog, running.app.drive.store, verify=True).lines() == []


def test_recover_rebuilds_the_catalog_from_the_channel(
    telegram: TelegramRig, start_server: Start, tmp_path: Path
) -> None:
    running = serve(telegram, start_server)
    build_history(running.url)
    running.ship()
    original = tree_of(running.app.drive.catalog)
    running.stop()
    fresh = Catalog(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    report = recover(fresh, telegram.open_store())
    assert report.problems == [] and report.manifests >= 1
    assert tree_of(fresh) == original
    fresh.close()


def test_refusals_telegram_should_never_send_are_clean_errors(
    telegram: TelegramRig, start_server: Start
) -> None:
    """Our requests obey Telegram's rules, so these only come from a broken server or
    account; each must be a clean 5xx that commits nothing, never a traceback page."""
    running = serve_direct(telegram, start_server)
    requests.put(running.url + "f.bin", data=b"old").raise_for_status()
    for request, error in [
        ("SaveFilePartRequest", "FILE_PART_SIZE_INVALID"),
        ("SendMediaRequest", "CHAT_WRITE_FORBIDDEN"),
    ]:
        telegram.fake.inject(request, error)
        response = requests.put(running.url + "f.bin", data=os.urandom(MiB + 3))
        assert response.status_code == 502, (error, response.status_code)
        assert "Traceback" not in response.text
        assert requests.get(running.url + "f.bin").content == b"old"
    telegram.fake.inject("GetFileRequest", "LIMIT_INVALID")
    response = requests.get(running.url + "f.bin")
    assert response.status_code == 502 and "Traceback" not in response.text
    assert requests.get(running.url + "f.bin").content == b"old"


def test_content_whose_message_vanished_is_posted_again_and_both_files_heal(
    telegram: TelegramRig, start_server: Start
) -> None:
    running = serve(telegram, start_server)
    body = os.urandom(MiB + 10)
    requests.put(running.url + "first.bin", data=body).raise_for_status()
    running.ship()
    telegram.fake.delete_behind(telegram.channel, channel_messages(telegram))
    assert requests.put(running.url + "second.bin", data=body).status_code == 201
    assert requests.get(running.url + "second.bin").content == body
    assert requests.get(running.url + "first.bin").content == body  # shares the re-posted chunks


def test_gc_deletes_the_messages_of_replaced_files_and_backups_live_in_the_channel(
    telegram: TelegramRig, start_server: Start, tmp_path: Path
) -> None:
    """On Telegram, gc's deletes are message deletions, and the catalog backup is a set
    of messages the channel keeps: losing the machine loses neither files nor index."""
    from davfs.backup import backup_catalog, list_backups, restore_catalog
    from davfs.gc import collect_garbage

    running = serve(telegram, start_server, gc_interval=0, backup_interval=0)
    old, new = os.urandom(MiB + 5), os.urandom(3000)
    requests.put(running.url + "f.bin", data=old).raise_for_status()
    requests.put(running.url + "f.bin", data=new).raise_for_status()
    requests.put(running.url + "keep.bin", data=b"keep").raise_for_status()
    running.ship()
    before = channel_messages(telegram)
    report = collect_garbage(running.app.drive.catalog, running.app.drive.store, grace=0)
    assert len(report.deleted) == 2 and not report.failed  # the two chunks of the old content
    assert channel_messages(telegram) == before - {int(loc) for _, loc, _ in report.deleted}
    assert requests.get(running.url + "f.bin").content == new

    made = backup_catalog(running.app.drive.catalog, running.app.drive.backing_store, part_size=MiB)
    expected = tree_of(running.app.drive.catalog)
    running.stop()
    store = telegram.open_store()
    assert [b.locator for b in list_backups(store)] == [made.locator]
    fresh = Catalog(f"sqlite:///{tmp_path / 'restored.sqlite'}")
    restore_catalog(fresh, store, made)
    assert tree_of(fresh) == expected
    assert fsck(fresh, store, verify=True).clean
    fresh.close()
    store.close()
