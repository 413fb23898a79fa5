"""What encryption at rest costs: the same davfs, on the local store, without and with
``encryption`` in one run (servers side by side, alternating round by round, as
``bench.py`` does), for a big PUT and warm GET and for random 64 KiB ranges, with
write-back off so every PUT seals and every GET opens on the request path.

    python3 bench/encryption_bench.py [--mib 256] [--rounds 3] [--budget 600]

Goal (issue 17): encrypted GET and PUT at most 15 % slower than plain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (  # noqa: E402 - the bench folder is not a package
    Budget,
    Client,
    ServerSpec,
    Target,
    make_big_file,
    start_server,
    workload_big,
    workload_ranges,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256, help="size of the big file (default 256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ranges", type=int, default=200)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds the whole run may take")
    args = parser.parse_args(argv)
    budget = Budget(args.budget)
    # Write-back off: with it, a PUT is answered from the staging folder and the sealing
    # happens when the chunks ship, off the request path, where a bench cannot see it.
    direct = (("DAVFS_WRITE_BACK", "false"),)
    specs = [
        ServerSpec("plain", "davfs", "davfs", env=direct),
        ServerSpec(
            "sealed",
            "davfs encrypted",
            "davfs",
            env=(*direct, ("DAVFS_ENCRYPTION", "true"), ("DAVFS_PASSPHRASE", "encryption bench passphrase")),
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="davfs-encbench-") as work_dir:
        work = Path(work_dir)
        files = [make_big_file(work / f"big-{i}.bin", args.mib) for i in range(args.rounds)]
        servers = [start_server(spec, work, budget) for spec in specs]
        try:
            targets = [
                Target(spec, server, Client(server.port)) for spec, server in zip(specs, servers, strict=True)
            ]
            started = time.perf_counter()
            workload_big(targets, files, args.rounds, budget)
            workload_ranges(targets, args.ranges, args.rounds, budget, seed=17)
            print(f"{args.mib} MiB, {args.rounds} rounds, {time.perf_counter() - started:.0f} s")
            plain, sealed = (t.res.values for t in targets)
            for key, label in [
                ("put_mbps", "PUT MB/s"),
                ("get_mbps", "GET MB/s"),
                ("range_rps", "64 KiB ranges req/s"),
                ("rss_put_growth_mib", "RSS growth in PUT, MiB"),
                ("rss_get_growth_mib", "RSS growth in GET, MiB"),
            ]:
                if key not in plain:
                    continue
                change = sealed[key] / plain[key] - 1 if plain[key] else 0.0
                print(f"  {label:<26} plain {plain[key]:8.1f}  encrypted {sealed[key]:8.1f}  ({change:+.0%})")
            for t in targets:
                for note in t.res.notes:
                    print(f"  note ({t.label}): {note}")
            slow = [key for key in ("put_mbps", "get_mbps") if sealed[key] < 0.85 * plain[key]]
            print(
                "goal (at most 15 % slower GET and PUT):",
                "MET" if not slow else f"NOT MET ({', '.join(slow)})",
            )
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
