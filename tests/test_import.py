"""``davfs import app-db`` (issue 18) on the wire-level fake Telegram: a channel and an
SQLite database built the way the original upload app built them (20 MB chunks, one
document message each, hex digests), taken in without one byte uploaded again."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from davfs.catalog import Catalog
from davfs.catalog.imports import IMPORTED_FROM
from davfs.cli import main as cli_main
from davfs.errors import ImportFailed
from davfs.fsck import fsck
from davfs.gc import collect_garbage
from davfs.importer import import_app_db, import_channel
from davfs.manifest import recover
from davfs.stores.telegram import parse_caption
from tests.conftest import RunningServer
from tests.telegram_rig import CHANNEL, TelegramRig

APP_CHUNK = 20_000_000
"""The app's chunk size: 20 MB, the last chunk of a file shorter."""


def post_documents(telegram: TelegramRig, files: list[tuple[str, bytes]]) -> list[int]:
    """Documents sent into the channel the way the app, a phone or a forward does (a
    plain telethon client, named, no davfs caption); their message ids."""

    async def post() -> list[int]:
        client = telegram.fake.client(telegram.user)
        await client.connect()
        try:
            channel = await client.get_input_entity(CHANNEL)
            ids = []
            for name, data in files:
                upload = io.BytesIO(data)
                upload.name = name
                ids.append((await client.send_file(channel, upload, force_document=True)).id)
            return ids
        finally:
            await client.disconnect()

    return asyncio.run(post())


def post_as_the_app(telegram: TelegramRig, chunks: list[bytes]) -> list[int]:
    """Each chunk as one document message, as the app posted them."""
    return post_documents(telegram, [(f"part{number}.bin", data) for number, data in enumerate(chunks)])


class AppDatabase:
    """The app's SQLite table ``files``, with an upload time column."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE files (id INTEGER PRIMARY KEY, filename TEXT, size INTEGER, "
                "message_ids TEXT, chunk_hashes TEXT, uploaded_at TEXT, owner TEXT)"
            )

    def add(self, name: str, size: int, message_ids: list[int], digests: list[str], uploaded: str) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute(
                "INSERT INTO files (filename, size, message_ids, chunk_hashes, uploaded_at, owner) "
                "VALUES (?, ?, ?, ?, ?, 'someone')",
                (name, size, json.dumps(message_ids), json.dumps(digests), uploaded),
            )


def app_file(
    telegram: TelegramRig,
    db: AppDatabase,
    name: str,
    data: bytes,
    digest: str,
    uploaded: str = "2023-05-01T10:00:00",
) -> list[int]:
    chunks = [data[i : i + APP_CHUNK] for i in range(0, len(data), APP_CHUNK)]
    ids = post_as_the_app(telegram, chunks) if chunks else []
    db.add(name, len(data), ids, [hashlib.new(digest, c).hexdigest() for c in chunks], uploaded)
    return ids


BIG = os.urandom(2 * APP_CHUNK + 5_000_123)
NOTES = "Grüße aus Tokio, 日本 ".encode() * 5000
REPORTS = (b"%PDF-1.4 the first report" * 1000, b"%PDF-1.4 another report" * 1200)


@pytest.fixture
def app_channel(telegram: TelegramRig, tmp_path: Path) -> tuple[AppDatabase, dict[str, bytes]]:
    """The app's files: what should come in (by drive name), and four rows that must not."""
    db = AppDatabase(tmp_path / "app.sqlite")
    app_file(telegram, db, "film.mkv", BIG, "sha256")
    app_file(telegram, db, "Grüße 日本.txt", NOTES, "md5")
    app_file(telegram, db, "report.pdf", REPORTS[0], "sha256")
    app_file(telegram, db, "report.pdf", REPORTS[1], "md5")  # the same name again
    app_file(telegram, db, "empty.txt", b"", "sha256")
    # A chunk whose bytes are not what the app recorded.
    ids = post_as_the_app(telegram, [b"what the message holds"])
    db.add("damaged.bin", 22, ids, [hashlib.sha256(b"what the app was sent").hexdigest()], "2023-05-02")
    # A file whose second message was deleted from the channel.
    ids = app_file(telegram, db, "half.bin", os.urandom(APP_CHUNK + 10), "sha1")
    telegram.fake.delete_behind(telegram.channel, [ids[1]])
    # A size that does not add up.
    ids = post_as_the_app(telegram, [b"twelve bytes"])
    db.add("short.txt", 13, ids, [hashlib.sha256(b"twelve bytes").hexdigest()], "2023-05-03")
    expected = {
        "film.mkv": BIG,
        "Grüße 日本.txt": NOTES,
        "report.pdf": REPORTS[0],
        "report (2).pdf": REPORTS[1],
        "empty.txt": b"",
    }
    return db, expected


def serve(telegram: TelegramRig, start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(store=telegram.open_store(), chunk_size="1MiB")


def channel_ids(telegram: TelegramRig) -> set[int]:
    return {m.id for m in telegram.fake.messages(telegram.channel)}


def test_the_apps_files_come_in_without_one_upload(telegram, app_channel, start_server) -> None:
    db, expected = app_channel
    running = serve(telegram, start_server)
    drive = running.app.drive
    before = channel_ids(telegram)

    dry = import_app_db(drive, db.path, dry_run=True)
    assert len(dry.imported) == 5 and requests.get(running.url + "Imported/").status_code == 404

    report = import_app_db(drive, db.path)
    assert sorted(report.imported) == sorted(f"/Imported/{name}" for name in expected)
    assert len(report.skipped) == 3, report.skipped
    skipped = "\n".join(report.skipped)
    assert "damaged.bin (app row 6): chunk 1 (message" in skipped and "does not match its SHA256" in skipped
    assert "half.bin (app row 7): chunk 2 (message" in skipped and "is gone from the channel" in skipped
    assert "short.txt (app row 8): its chunks hold 12 bytes, the app recorded 13" in skipped
    assert report.digests["md5"] == 2 and report.digests["sha256"] >= 4 and report.digests["sha1"] == 1
    assert "chunk digests checked: " in report.lines()[-1]

    drive.manifests.flush()
    posted = channel_ids(telegram) - before
    captions = {m.id: m.text for m in telegram.fake.messages(telegram.channel)}
    assert all(parse_caption(captions[i]) for i in posted)  # davfs's manifests, nothing else
    with requests.Session() as http:
        for name, data in expected.items():
            response = http.get(running.url + "Imported/" + quote(name))
            assert response.status_code == 200 and response.content == data, name
        # Ranges across the app's 20 MB boundaries.
        for start in (APP_CHUNK - 10, 2 * APP_CHUNK - 65_536, 2 * APP_CHUNK + 4_999_000):
            got = http.get(
                running.url + "Imported/film.mkv", headers={"Range": f"bytes={start}-{start + 99_999}"}
            )
            assert got.status_code == 206 and got.content == BIG[start : start + 100_000], start
        stamp = http.head(running.url + "Imported/report.pdf").headers["Last-Modified"]
        assert parsedate_to_datetime(stamp).timestamp() == 1682935200  # 2023-05-01T10:00:00Z
    assert fsck(drive.catalog, drive.store, verify=True).lines() == []

    again = import_app_db(drive, db.path)
    assert again.imported == [] and again.already == 5 and len(again.skipped) == 3


def test_an_interrupted_import_continues_where_it_stopped(
    telegram, app_channel, start_server, monkeypatch
) -> None:
    db, expected = app_channel
    running = serve(telegram, start_server)
    drive = running.app.drive
    store = drive.backing_store
    real_get, calls = store.get, [0]

    def dies_midway(locator: str, offset: int, length: int) -> bytes:
        calls[0] += 1
        if calls[0] == 4:  # inside film.mkv, after its first chunks were read
            raise KeyboardInterrupt
        return real_get(locator, offset, length)

    monkeypatch.setattr(store, "get", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        import_app_db(drive, db.path)
    monkeypatch.undo()
    assert requests.get(running.url + "Imported/film.mkv").status_code == 404  # nothing half-imported
    report = import_app_db(drive, db.path)
    assert len(report.imported) == 5
    with drive.catalog.db.engine.connect() as conn:
        sources = conn.exec_driver_sql(
            "SELECT value FROM dead_props WHERE name = ?", (IMPORTED_FROM,)
        ).fetchall()
    assert len(sources) == len({s[0] for s in sources}) == 5  # each once
    for name, data in expected.items():
        assert requests.get(running.url + "Imported/" + quote(name)).content == data


def test_gc_never_deletes_a_message_davfs_did_not_post_and_recover_keeps_imports(
    telegram, app_channel, start_server, tmp_path
) -> None:
    db, expected = app_channel
    running = serve(telegram, start_server)
    drive = running.app.drive
    import_app_db(drive, db.path)
    film_messages = [
        int(i)
        for i in json.loads(
            sqlite3.connect(db.path)
            .execute("SELECT message_ids FROM files WHERE filename = 'film.mkv'")
            .fetchone()[0]
        )
    ]
    assert requests.delete(running.url + "Imported/report.pdf").status_code == 204
    assert requests.delete(running.url + "Imported/film.mkv").status_code == 204
    drive.empty_trash()
    collect_garbage(drive.catalog, drive.store, grace=0)
    assert set(film_messages) <= channel_ids(telegram)  # the app's messages stay
    drive.manifests.flush()
    running.stop()

    fresh = Catalog(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    report = recover(fresh, telegram.open_store())
    assert report.problems == [], report.problems
    recovered = {path for path, node in fresh.tree.walk() if not node.is_dir}
    assert recovered == {"/Imported/Grüße 日本.txt", "/Imported/report (2).pdf", "/Imported/empty.txt"}
    fresh.close()


def test_import_needs_the_telegram_store_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "app.sqlite"
    AppDatabase(database)
    code = cli_main(["-c", os.devnull, "-d", str(tmp_path / "data"), "import", "app-db", str(database)])
    assert code == ImportFailed.exit_code
    assert "set davfs.store to telegram" in capsys.readouterr().err


PHONE = [
    ("Urlaub am Meer.jpg", os.urandom(3 * 1024 * 1024 + 777)),  # Telegram's range hashes come in pages
    ("Vertrag.pdf", b"%PDF-1.7 signed" * 3000),
    ("Vertrag.pdf", b"%PDF-1.7 the other one" * 2000),
]


def test_documents_davfs_did_not_post_come_in_by_name_and_date(
    telegram, start_server, monkeypatch, tmp_path
) -> None:
    db = AppDatabase(tmp_path / "app.sqlite")
    app_file(telegram, db, "two chunks.bin", os.urandom(APP_CHUNK + 1000), "sha256")
    running = serve(telegram, start_server)
    drive = running.app.drive
    requests.put(running.url + "mine.bin", data=os.urandom(2 * 1024 * 1024)).raise_for_status()
    running.ship()  # davfs's own chunk messages: never imported
    import_app_db(drive, db.path)  # the app's chunks are parts of files, taken in first
    posted_at = time.time()
    phone_ids = post_documents(telegram, PHONE)
    broken = post_documents(telegram, [("kaputt.bin", os.urandom(300_000))])[0]

    store = drive.backing_store
    real_get = store.get

    def damaged_on_the_way(locator: str, offset: int, length: int) -> bytes:
        data = real_get(locator, offset, length)
        if locator == f"message:{broken}" and offset == 0:
            return bytes([data[0] ^ 1]) + data[1:]
        return data

    monkeypatch.setattr(store, "get", damaged_on_the_way)
    report = import_channel(drive)
    monkeypatch.undo()
    assert sorted(report.imported) == [
        "/From the channel/Urlaub am Meer.jpg",
        "/From the channel/Vertrag (2).pdf",
        "/From the channel/Vertrag.pdf",
    ]
    assert report.skipped == [
        f"kaputt.bin (message {broken}): bytes 0-131071 do not match Telegram's SHA-256 of them"
    ]
    assert report.digests["telegram sha256"] == 3
    with requests.Session() as http:
        for (_, data), shown in zip(
            PHONE, ["Urlaub am Meer.jpg", "Vertrag.pdf", "Vertrag (2).pdf"], strict=True
        ):
            got = http.get(running.url + "From%20the%20channel/" + quote(shown))
            assert got.status_code == 200 and got.content == data, shown
            stamp = parsedate_to_datetime(got.headers["Last-Modified"]).timestamp()
            assert posted_at - 2 <= stamp <= time.time() + 1  # the message's date
    assert set(phone_ids) <= {
        int(loc.removeprefix("message:")) for loc in drive.catalog.imports.chunk_locators()
    }
    again = import_channel(drive)
    # Only what was skipped is tried again (kaputt.bin reads intact now); nothing twice.
    assert again.imported == ["/From the channel/kaputt.bin"] and again.already == 3 and again.skipped == []
    assert fsck(drive.catalog, drive.store, verify=True).lines() == []
