"""davfs ls/put/get work on the catalog and store directly, no server needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from davfs.cli import OS_ERROR, main
from davfs.errors import DavfsError, NotAFile, NotFound
from davfs.stores.local import LocalStore

REPO = Path(__file__).resolve().parent.parent


def run(tmp_path, *args):
    return main(["-c", os.devnull, "-d", str(tmp_path / "data"), *args])


def file_chunks(tmp_path: Path) -> list[str]:
    """The kind of every chunk of file data in the local store."""
    store = LocalStore(tmp_path / "data" / "store")
    return [meta.kind for _, meta in store.iter_chunks() if meta.kind in ("data", "pack")]


def test_put_ls_get_round_trip(tmp_path, capsys):
    source = tmp_path / "report.bin"
    data = os.urandom(3 * 1024 * 1024 + 5)
    source.write_bytes(data)
    os.utime(source, (1_600_000_000, 1_600_000_000))
    assert run(tmp_path, "put", str(source), "/") == 0
    assert run(tmp_path, "ls", "/") == 0
    listing = capsys.readouterr().out
    assert "report.bin" in listing and str(len(data)) in listing
    out = tmp_path / "out.bin"
    assert run(tmp_path, "get", "/report.bin", str(out)) == 0
    assert out.read_bytes() == data
    assert int(out.stat().st_mtime) == 1_600_000_000
    assert not list(tmp_path.glob("*.davfs-part"))


def test_files_put_by_the_cli_are_served(tmp_path, start_server, http):
    source = tmp_path / "a.txt"
    source.write_bytes(b"from the cli")
    assert run(tmp_path, "put", str(source), "/renamed.txt") == 0
    server = start_server(data_dir=tmp_path / "data")
    assert http.get(server.url + "renamed.txt").content == b"from the cli"


def test_errors_are_one_line_with_their_own_exit_code(tmp_path, capsys):
    assert run(tmp_path, "get", "/missing.txt", str(tmp_path / "x")) == NotFound.exit_code
    err = capsys.readouterr().err
    assert "/missing.txt does not exist" in err and "Traceback" not in err
    assert run(tmp_path, "put", str(tmp_path / "nope"), "/x") == OS_ERROR
    assert run(tmp_path, "ls", "/nowhere") == NotFound.exit_code
    assert run(tmp_path, "get", "/", str(tmp_path / "x")) == NotAFile.exit_code


def test_every_error_class_has_its_own_exit_code_listed_in_the_readme():
    classes = [DavfsError, *_subclasses(DavfsError)]
    codes = [cls.exit_code for cls in classes]
    assert len(set(codes)) == len(codes), "two error classes share an exit code"
    assert OS_ERROR not in codes and 0 not in codes and 1 not in codes
    readme = (REPO / "README.md").read_text()
    for cls in classes:
        assert f"| {cls.exit_code} | `{cls.__name__}` |" in readme, cls.__name__


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_console_script_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "davfs.cli", "-c", os.devnull, "-d", str(tmp_path / "d"), "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_names_no_client_could_use_are_refused(tmp_path, capsys):
    source = tmp_path / "a.txt"
    source.write_bytes(b"x")
    for dest in ("/..", "/a/../b", "/x/./y"):
        assert run(tmp_path, "put", str(source), dest) != 0
    assert "not a valid path" in capsys.readouterr().err
    assert run(tmp_path, "ls", "/") == 0
    assert capsys.readouterr().out == ""


def test_sigterm_shuts_the_server_down_in_order(server_process, tmp_path):
    """systemd, docker and kill send SIGTERM: the last manifest must still be written."""
    import requests

    from davfs.catalog import Catalog

    proc = server_process(tmp_path / "data", env={"DAVFS_MANIFEST_INTERVAL": "3600"})
    requests.put(proc.url + "f.bin", data=os.urandom(6 * 1024 * 1024), timeout=10).raise_for_status()
    deadline = time.monotonic() + 30  # shipped (manifests name shipped content only)
    while requests.get(proc.url + ".davfs/health", timeout=10).json()["write_back"]["pending_files"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.process.terminate()
    assert proc.process.wait(timeout=30) == 0, proc.log()
    catalog = Catalog(f"sqlite:///{tmp_path / 'data' / 'catalog.sqlite'}")
    assert catalog.oplog.pending(10) == []  # every change is in a manifest in the store
    catalog.close()


def test_status_tells_what_waits_to_be_shipped_and_ship_ships_it(tmp_path, capsys):
    for name, data in (("small.txt", b"small"), ("big.bin", os.urandom(21 * 1024 * 1024))):
        (tmp_path / name).write_bytes(data)
        assert run(tmp_path, "put", str(tmp_path / name), "/") == 0
    capsys.readouterr()
    assert run(tmp_path, "status") == 0
    out = capsys.readouterr().out
    assert "shipping: 2 files (21.0 MiB) wait on this machine" in out, out
    assert file_chunks(tmp_path) == []  # manifests only
    assert run(tmp_path, "ship") == 0
    assert "shipped 3 chunks (21.0 MiB)" in capsys.readouterr().out
    assert sorted(file_chunks(tmp_path)) == ["data", "data", "pack"]  # big.bin's two, small.txt's pack
    assert run(tmp_path, "status", "--json") == 0
    state = json.loads(capsys.readouterr().out)
    assert state["write_back"]["pending_files"] == 0 and state["write_back"]["pending_bytes"] == 0
    out_file = tmp_path / "out.bin"
    assert run(tmp_path, "get", "/big.bin", str(out_file)) == 0
    assert out_file.read_bytes() == (tmp_path / "big.bin").read_bytes()
