"""Encryption at rest (issue 17): what reaches the store is unreadable without the
passphrase, tampering is an integrity failure and never wrong bytes, and a new machine
opens the drive with the store and the passphrase alone."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from davfs.catalog import Catalog
from davfs.cli import main as cli_main
from davfs.errors import ConfigError, WrongPassphrase
from davfs.fsck import fsck
from davfs.stores.sealed import KEY_FILE, SEALED_BLOCK
from tests.conftest import MiB, RunningServer
from tests.telegram_rig import TelegramRig

PASSPHRASE = "correct horse battery staple"
SEALED = {"encryption": True, "passphrase": PASSPHRASE}
FILES = {
    "Steuererklärung 2025.pdf": b"%PDF-1.7 income tax " * 20_000,
    "Geheim/Tagebuch.txt": "Liebes Tagebuch, heute war ein geheimer Tag. ".encode() * 300,
    "Geheim/klein.txt": b"a small secret",
    "film.mkv": os.urandom(3 * MiB + 12_345),
}
PROPERTY = '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop><Z:label>Kontoauszug-Markierung</Z:label></D:prop></D:set></D:propertyupdate>'


def fill(running: RunningServer) -> None:
    with requests.Session() as http:
        assert http.request("MKCOL", running.url + "Geheim").status_code == 201
        for path, data in FILES.items():
            assert http.put(running.url + quote(path), data=data).status_code == 201
        assert http.request("PROPPATCH", running.url + "Geheim/klein.txt", data=PROPERTY).status_code == 207
    running.ship()
    running.app.drive.manifests.flush()


def secrets_of(data_dir: Path) -> list[bytes]:
    """What must never reach the store: names, contents, plaintext ChunkHashes and
    BlockHashes (hex and raw), a dead property's value."""
    found = [b"Kontoauszug-Markierung", b"Tagebuch", "Steuererklärung".encode(), b"Geheim"]
    for data in FILES.values():
        found += [data[i : i + 48] for i in range(0, len(data), max(1, len(data) // 5))]
    with sqlite3.connect(data_dir / "catalog.sqlite") as db:
        for chunk_hash, block_hashes in db.execute("SELECT chunk_hash, block_hashes FROM chunks"):
            found += [chunk_hash.encode(), bytes.fromhex(chunk_hash), bytes(block_hashes)[:32]]
    return [s for s in found if len(s) >= 12]


def assert_none_in(secrets: list[bytes], blobs: Iterator[bytes]) -> int:
    seen = 0
    for blob in blobs:
        seen += len(blob)
        for secret in secrets:
            assert secret not in blob, f"{secret[:40]!r} reached the store"
    return seen


def files_under(folder: Path) -> Iterator[bytes]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path.read_bytes()
            yield path.name.encode()


def test_a_local_store_holds_nothing_readable(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, chunk_size="1MiB", **SEALED)
    fill(running)
    assert running.app.drive.key_id is not None
    for path, data in FILES.items():
        got = requests.get(running.url + quote(path))
        assert got.status_code == 200 and got.content == data, path
    film = FILES["film.mkv"]
    ranged = requests.get(running.url + "film.mkv", headers={"Range": "bytes=1048570-2162700"})
    assert ranged.status_code == 206 and ranged.content == film[1048570:2162701]
    assert fsck(running.app.drive.catalog, running.app.drive.store, verify=True).lines() == []
    running.stop()
    seen = assert_none_in(secrets_of(data_dir), files_under(data_dir / "store"))
    assert seen > sum(map(len, FILES.values()))


def test_nothing_readable_reaches_telegram(
    telegram: TelegramRig, start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Every byte the wire-level fake holds: captions and documents (chunks, manifests,
    the catalog backup, the wrapped key)."""
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, store=telegram.open_store(), chunk_size="1MiB", **SEALED)
    fill(running)
    from davfs.backup import backup_catalog

    backup_catalog(running.app.drive.catalog, running.app.drive.backing_store, part_size=MiB)
    for path, data in FILES.items():
        assert requests.get(running.url + quote(path)).content == data
    running.stop()
    messages = telegram.fake.messages(telegram.channel)
    assert len(messages) >= 5
    blobs = (piece for m in messages for piece in (m.text.encode(), m.data))
    assert_none_in(secrets_of(data_dir), blobs)


def _object_files(data_dir: Path) -> list[Path]:
    """The stored objects of data chunks (not the key), largest first."""
    objects = [p for p in (data_dir / "store").rglob("*.chunk")]
    return sorted(objects, key=lambda p: p.stat().st_size, reverse=True)


@pytest.mark.parametrize("tamper", ["flipped byte", "swapped blocks", "another drive's object"])
def test_tampering_is_an_integrity_failure_never_wrong_bytes(
    start_server: Callable[..., RunningServer], tmp_path: Path, tamper: str
) -> None:
    data = os.urandom(2 * MiB)
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, chunk_size="4MiB", write_back=False, **SEALED)
    requests.put(running.url + "f.bin", data=data).raise_for_status()
    running.stop()
    target = _object_files(data_dir)[0]
    sealed = bytearray(target.read_bytes())
    if tamper == "flipped byte":
        sealed[5 * SEALED_BLOCK + 100] ^= 1
    elif tamper == "swapped blocks":
        a, b = slice(2 * SEALED_BLOCK, 3 * SEALED_BLOCK), slice(3 * SEALED_BLOCK, 4 * SEALED_BLOCK)
        sealed[a], sealed[b] = sealed[b], sealed[a]
    else:  # the same content, sealed by another drive (its own key), in this one's place
        other_dir = tmp_path / "other"
        other = start_server(
            data_dir=other_dir, chunk_size="4MiB", write_back=False, encryption=True, passphrase="x"
        )
        requests.put(other.url + "f.bin", data=data).raise_for_status()
        other.stop()
        sealed = bytearray(_object_files(other_dir)[0].read_bytes())
    os.chmod(target, 0o600)
    target.write_bytes(sealed)
    running = start_server(data_dir=data_dir, chunk_size="4MiB", write_back=False, **SEALED)
    whole = requests.get(running.url + "f.bin")
    if whole.status_code == 500:  # the first window failed: nothing sent
        assert b"failed verification" in whole.content and data[:64] not in whole.content
    else:  # cut short after the blocks before the damage, never a wrong byte
        assert whole.content != data and data.startswith(whole.content)
    if tamper != "another drive's object":
        assert requests.get(running.url + "f.bin", headers={"Range": "bytes=0-65535"}).content == data[:65536]
    assert fsck(running.app.drive.catalog, running.app.drive.store, verify=True).lines() != []


def cli(data_dir: Path, *args: str) -> int:
    return cli_main(["-c", os.devnull, "-d", str(data_dir), *args])


def test_a_new_machine_needs_only_the_store_and_the_passphrase(
    start_server: Callable[..., RunningServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, chunk_size="1MiB", **SEALED)
    fill(running)
    running.stop()
    monkeypatch.setenv("DAVFS_ENCRYPTION", "true")
    monkeypatch.setenv("DAVFS_PASSPHRASE", PASSPHRASE)
    assert cli(data_dir, "backup") == 0
    for command in ("recover", "restore"):
        fresh = tmp_path / command
        fresh.mkdir()
        shutil.copytree(data_dir / "store", fresh / "store")  # the store alone: no key file, no catalog
        assert not (fresh / KEY_FILE).exists()
        assert cli(fresh, command) == 0, capsys.readouterr()
        monkeypatch.delenv("DAVFS_ENCRYPTION")  # the drive says it is encrypted now
        running = start_server(data_dir=fresh, chunk_size="1MiB", passphrase=PASSPHRASE)
        assert running.app.drive.key_id is not None
        for path, data in FILES.items():
            assert requests.get(running.url + quote(path)).content == data, (command, path)
        running.stop()
        monkeypatch.setenv("DAVFS_ENCRYPTION", "true")


def test_a_wrong_or_missing_passphrase_is_one_clear_line(
    start_server: Callable[..., RunningServer], tmp_path: Path, capsys, monkeypatch
) -> None:
    data_dir = tmp_path / "data"
    start_server(data_dir=data_dir, **SEALED).stop()
    capsys.readouterr()
    monkeypatch.setenv("DAVFS_PASSPHRASE", "not it")
    assert cli(data_dir, "ls") == WrongPassphrase.exit_code
    assert capsys.readouterr().err.strip() == (
        "davfs: Cannot open the drive's key: the passphrase is not this drive's (DAVFS_PASSPHRASE)"
    )
    monkeypatch.delenv("DAVFS_PASSPHRASE")
    assert cli(data_dir, "ls") == ConfigError.exit_code  # encrypted whatever the config says
    assert "this drive is encrypted: give its passphrase in DAVFS_PASSPHRASE" in capsys.readouterr().err


def test_encryption_is_never_switched_on_over_plaintext(
    start_server: Callable[..., RunningServer], tmp_path: Path, capsys, monkeypatch
) -> None:
    data_dir = tmp_path / "data"
    plain = start_server(data_dir=data_dir)
    requests.put(plain.url + "a.txt", data=b"plain").raise_for_status()
    plain.stop()
    capsys.readouterr()
    monkeypatch.setenv("DAVFS_ENCRYPTION", "true")
    monkeypatch.setenv("DAVFS_PASSPHRASE", PASSPHRASE)
    assert cli(data_dir, "ls") == ConfigError.exit_code
    assert "already holds unencrypted files" in capsys.readouterr().err
    assert not (data_dir / KEY_FILE).exists()


def test_status_says_whether_the_drive_is_encrypted(
    start_server: Callable[..., RunningServer], tmp_path: Path, capsys, monkeypatch
) -> None:
    sealed_dir, plain_dir = tmp_path / "sealed", tmp_path / "plain"
    start_server(data_dir=sealed_dir, **SEALED).stop()
    start_server(data_dir=plain_dir).stop()
    capsys.readouterr()
    assert cli(plain_dir, "status") == 0
    assert "encryption: off" in capsys.readouterr().out
    monkeypatch.setenv("DAVFS_PASSPHRASE", PASSPHRASE)
    assert cli(sealed_dir, "status") == 0
    assert "encryption: on (key " in capsys.readouterr().out
    catalog = Catalog(f"sqlite:///{sealed_dir / 'catalog.sqlite'}")
    try:
        assert catalog.db.setting("encryption") is not None
    finally:
        catalog.close()


def test_a_new_passphrase_opens_the_drive_and_the_old_one_no_longer_does(
    start_server: Callable[..., RunningServer], tmp_path: Path, capsys, monkeypatch
) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, chunk_size="1MiB", **SEALED)
    requests.put(running.url + "a.txt", data=b"kept").raise_for_status()
    running.ship()
    running.stop()
    monkeypatch.setenv("DAVFS_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DAVFS_NEW_PASSPHRASE", "a much better passphrase")
    assert cli(data_dir, "passphrase") == 0
    assert "(1 copies under the old one deleted)" in capsys.readouterr().out
    assert cli(data_dir, "ls") == WrongPassphrase.exit_code
    # A new machine with the store alone: only the new passphrase opens it.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copytree(data_dir / "store", fresh / "store")
    monkeypatch.setenv("DAVFS_ENCRYPTION", "true")
    assert cli(fresh, "recover") == WrongPassphrase.exit_code
    monkeypatch.setenv("DAVFS_PASSPHRASE", "a much better passphrase")
    capsys.readouterr()
    assert cli(fresh, "recover") == 0
    assert cli(fresh, "get", "/a.txt", "-") == 0
    assert capsys.readouterr().out.endswith("kept")


def test_telegram_recover_needs_the_channel_and_the_passphrase_alone(
    telegram: TelegramRig, start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    from davfs.drive import Drive
    from davfs.manifest import recover
    from tests.conftest import davfs_config

    running = start_server(
        data_dir=tmp_path / "first", store=telegram.open_store(), chunk_size="1MiB", **SEALED
    )
    fill(running)
    running.stop()
    fresh = tmp_path / "second"  # no key file, no catalog: a session and the passphrase
    with Drive(davfs_config(fresh, chunk_size="1MiB", **SEALED), store=telegram.open_store()) as drive:
        report = recover(drive.catalog, drive.backing_store)
        assert report.problems == [] and report.files == len(FILES)
    running = start_server(
        data_dir=fresh, store=telegram.open_store(), chunk_size="1MiB", passphrase=PASSPHRASE
    )
    for path, data in FILES.items():
        assert requests.get(running.url + quote(path)).content == data


def test_a_passphrase_change_says_so_when_old_copies_cannot_be_listed(
    start_server: Callable[..., RunningServer], tmp_path: Path, capsys, monkeypatch
) -> None:
    """A bot session cannot list a channel: the key is re-wrapped, and the command says
    the copies under the old passphrase stay (exit 1) instead of failing halfway."""
    from davfs.errors import StoreError
    from davfs.stores.local import LocalStore

    data_dir = tmp_path / "data"
    start_server(data_dir=data_dir, **SEALED).stop()

    def cannot_list(self: LocalStore) -> Iterator[object]:
        raise StoreError("local", "listing the channel needs a user session")

    monkeypatch.setattr(LocalStore, "iter_chunks", cannot_list)
    monkeypatch.setenv("DAVFS_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DAVFS_NEW_PASSPHRASE", "a much better passphrase")
    capsys.readouterr()
    assert cli(data_dir, "passphrase") == 1
    assert "copies under the old passphrase stay there" in capsys.readouterr().out
    monkeypatch.undo()
    monkeypatch.setenv("DAVFS_PASSPHRASE", "a much better passphrase")
    assert cli(data_dir, "ls") == 0  # the data folder's copy is the new one
