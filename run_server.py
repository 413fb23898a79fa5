"""Serve ./data at http://127.0.0.1:8080/ using wsgidav.yaml (same as `davfs serve`).

Start here to follow a request down to a chunk: davfs.server.build_app opens the
davfs.drive.Drive (catalog, store, background jobs) and serves it through
davfs.provider.DavfsProvider; a GET goes Drive.open_read → davfs.reader.ChunkReader,
a PUT Drive.open_write → davfs.writer.ChunkWriter.
"""

import sys

from davfs.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
