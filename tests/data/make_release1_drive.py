"""Writes tests/data/release1-drive.tar.gz: a data folder made by davfs's first release
(commit e420754), for tests/test_formats.py, which opens it with today's code.

Run from a checkout of that release (it imports the davfs there), e.g.
``git worktree add /tmp/r1 e420754 && cd /tmp/r1 && python3 /path/to/this/script OUT``.
The drive holds every kind of stored object the release wrote: multi-chunk and small
files, an empty file, folders, dead properties, a renamed, a copied, a replaced and a
deleted file, manifests and a catalog backup. ``expected.json`` inside lists what each
file must read back as.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import requests

from davfs.backup import backup_catalog
from davfs.config import load_config
from davfs.server import build_app, make_server

MiB = 1024 * 1024
PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
    "<Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"
)


def main(out: str) -> None:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        config = load_config(
            os.devnull,
            environ={},
            overrides={"data_dir": str(data_dir), "port": 0, "anonymous": True, "chunk_size": "1MiB"},
        )
        app = build_app(config)
        server = make_server(config, app)
        server.prepare()
        threading.Thread(target=server.serve, daemon=True).start()
        url = "http://127.0.0.1:%d/" % server.bind_addr[1]
        files = {
            "docs/big.bin": rng.randbytes(MiB + 300_000),
            "docs/a.txt": b"alpha v1",
            "docs/old/gone.txt": b"deleted later",
            "empty.txt": b"",
            "na\u00efve \u65e5\u672c.txt": "unicode names".encode(),
            "mtime.txt": b"an old file",
        }
        s = requests.Session()

        def ok(response: requests.Response) -> None:
            assert response.status_code < 300, (
                response.request.method,
                response.request.url,
                response.status_code,
            )

        ok(s.request("MKCOL", url + "docs"))
        ok(s.request("MKCOL", url + "docs/old"))
        for path, body in files.items():
            headers = {"X-OC-Mtime": "1000000000"} if path == "mtime.txt" else {}
            ok(s.put(url + path, data=body, headers=headers))
        ok(s.put(url + "docs/a.txt", data=b"alpha v2, replacing v1"))
        ok(s.request("DELETE", url + "docs/old"))
        ok(s.request("MOVE", url + "docs/big.bin", headers={"Destination": url + "moved.bin"}))
        ok(s.request("COPY", url + "docs", headers={"Destination": url + "copy", "Depth": "infinity"}))
        ok(s.request("PROPPATCH", url + "moved.bin", data=PROPPATCH, headers={"Content-Type": "text/xml"}))
        expected = {
            "moved.bin": files["docs/big.bin"],
            "docs/a.txt": b"alpha v2, replacing v1",
            "copy/a.txt": b"alpha v2, replacing v1",
            "empty.txt": b"",
            "na\u00efve \u65e5\u672c.txt": files["na\u00efve \u65e5\u672c.txt"],
            "mtime.txt": files["mtime.txt"],
        }
        app.manifests.flush()
        backup_catalog(app.catalog, app.store, part_size=config.chunk_size)
        server.stop()
        app.close()
        summary = {
            "files": {p: hashlib.sha256(b).hexdigest() for p, b in expected.items()},
            "sizes": {p: len(b) for p, b in expected.items()},
            "folders": ["docs", "copy"],
            "props": {"moved.bin": {"{urn:x}colour": "blue"}},
            "mtimes": {"mtime.txt": 1000000000},
        }
        (data_dir / "expected.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
        for junk in ("locks.shelve.dat", "locks.shelve.dir", "locks.shelve.bak", "generated-user.yaml"):
            (data_dir / junk).unlink(missing_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(data_dir, arcname="data")


if __name__ == "__main__":
    main(sys.argv[1])
