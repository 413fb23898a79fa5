"""Serve ./data at http://127.0.0.1:8080/ using wsgidav.yaml (same as `davfs serve`).

Start here to follow a request down to a chunk: davfs.server.build_app wires the
catalog and the chunk store into davfs.provider.DavfsProvider; GET goes through
davfs.reader.ChunkReader, PUT through davfs.writer.ChunkWriter.
"""

import sys

from davfs.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
