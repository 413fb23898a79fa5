"""litmus, the WebDAV protocol compliance suite, against a real davfs server.

All five litmus groups (basic, copymove, props, locks, http) must run and report zero
failures (warnings are allowed), logged in as a user the way real clients are (litmus's
neon answers the Digest challenge). Runs with the test server's 1 MiB chunks, with the
production default of 20 MiB chunks, as a subprocess with the user davfs generates on
its first start, on the Telegram store (the wire-level fake; plain and encrypted), and as a scale-out
instance on PostgreSQL + Redis.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml
from requests.auth import HTTPDigestAuth

from tests.conftest import RunningServer, ServerProcess
from tests.telegram_rig import TelegramRig
from tests.test_scale_out import scale_out_config

pytestmark = pytest.mark.slow

GROUPS = ("basic", "copymove", "props", "locks", "http")
# Tests per group in litmus 0.13 (Debian 12); a group that stops early runs fewer.
MIN_TESTS = {"basic": 16, "copymove": 13, "props": 30, "locks": 41, "http": 4}
LITMUS_TIMEOUT = 120
USER, PASSWORD = "litmus", "litmus-secret"

_SUMMARY = re.compile(
    r"<- summary for `(?P<group>[^']+)': of (?P<run>\d+) tests run: "
    r"(?P<passed>\d+) passed, (?P<failed>\d+) failed"
)


def litmus_binary() -> str:
    path = shutil.which("litmus")
    if path is None:
        pytest.fail("the `litmus` binary is not on PATH (Debian/Ubuntu: apt-get install litmus)")
    return path


def parse_summaries(output: str) -> dict[str, dict[str, int]]:
    """``{group: {"run": N, "passed": N, "failed": N, "skipped": N}}`` from litmus output."""
    summaries: dict[str, dict[str, int]] = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        match = _SUMMARY.search(line)
        if match is None:
            continue
        counts = {key: int(match[key]) for key in ("run", "passed", "failed")}
        counts["skipped"] = 0
        # litmus prints "-> N tests were skipped." right after the summary line.
        for follow in lines[index + 1 : index + 4]:
            if follow.startswith(("<-", "-> running")):
                break
            skipped = re.search(r"-> (\d+) tests? (?:was|were) skipped", follow)
            if skipped:
                counts["skipped"] = int(skipped[1])
        summaries[match["group"]] = counts
    return summaries


@pytest.mark.parametrize(
    "target",
    ["inprocess-1MiB", "inprocess-20MiB", "subprocess", "telegram", "telegram-encrypted", "postgresql-redis"],
)
def test_litmus_all_groups_pass(
    telegram: TelegramRig,  # first, so it outlives the servers that use it
    start_server: Callable[..., RunningServer],
    server_process: Callable[..., ServerProcess],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    target: str,
) -> None:
    litmus = litmus_binary()
    user, password = USER, PASSWORD
    users = {USER: PASSWORD}
    if target == "subprocess":
        process = server_process(env={"DAVFS_ANONYMOUS": "false"})
        generated = yaml.safe_load((process.data_dir / "generated-user.yaml").read_text())
        url, user, password = process.url, generated["user"], generated["password"]
    elif target == "postgresql-redis":
        config = scale_out_config(
            tmp_path, request.getfixturevalue("postgres_url"), request.getfixturevalue("redis_url")
        )
        url = server_process(env={"DAVFS_CONFIG": str(config), "DAVFS_USERS": str(users)}).url
    elif target.startswith("telegram"):
        sealed = (
            {"encryption": True, "passphrase": "litmus drive passphrase"}
            if target.endswith("encrypted")
            else {}
        )
        url = start_server(store=telegram.open_store(), chunk_size="1MiB", users=users, **sealed).url
    else:
        url = start_server(chunk_size=target.removeprefix("inprocess-"), users=users).url
    assert requests.request("MKCOL", url + "litmus/", timeout=10).status_code == 401
    response = requests.request("MKCOL", url + "litmus/", auth=HTTPDigestAuth(user, password), timeout=10)
    assert response.status_code == 201, response.text

    workdir = tmp_path / "litmus-home"  # litmus writes debug.log / child.log into its cwd
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HOME=str(workdir), TESTS=" ".join(GROUPS))
    try:
        result = subprocess.run(
            [litmus, "-k", url + "litmus/", user, password],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=LITMUS_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"litmus did not finish within {LITMUS_TIMEOUT} s; output so far:\n{out}")

    output = result.stdout + "\n" + result.stderr
    debug_log = workdir / "debug.log"
    context = f"litmus exit {result.returncode}, output:\n{output}"
    if debug_log.exists():
        context += "\n--- debug.log (tail) ---\n" + debug_log.read_text(errors="replace")[-20000:]

    summaries = parse_summaries(result.stdout)
    for group in GROUPS:
        assert group in summaries, f"litmus group {group!r} did not run\n{context}"
        counts = summaries[group]
        assert counts["failed"] == 0, f"litmus group {group!r} had failures {counts}\n{context}"
        assert counts["passed"] == counts["run"], f"{group!r}: {counts}\n{context}"
        assert counts["skipped"] == 0, f"{group!r} skipped tests: {counts}\n{context}"
        assert counts["run"] >= MIN_TESTS[group], f"{group!r} stopped early: {counts}\n{context}"
    assert result.returncode == 0, context


def test_parse_summaries_sees_failures_and_skips() -> None:
    """The parser must not turn a failing litmus run into a pass."""
    output = (
        "<- summary for `basic': of 16 tests run: 16 passed, 0 failed. 100.0%\n"
        "-> 1 warning was issued.\n"
        "<- summary for `locks': of 41 tests run: 39 passed, 2 failed. 95.1%\n"
        "-> 3 tests were skipped.\n"
    )
    assert parse_summaries(output) == {
        "basic": {"run": 16, "passed": 16, "failed": 0, "skipped": 0},
        "locks": {"run": 41, "passed": 39, "failed": 2, "skipped": 3},
    }
