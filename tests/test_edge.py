"""The edge every request passes: request ids, one access-log line without secrets, and
the health endpoint, which needs no login and is not part of the share."""

from __future__ import annotations

import logging
import re

import pytest
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

USERS = {"alice": "correct horse"}


def test_health_answers_without_login_and_says_when_the_catalog_is_down(start_server, monkeypatch):
    server = start_server(users=USERS)
    r = requests.get(server.url + ".davfs/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["Cache-Control"] == "no-store"

    def broken() -> int:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(server.app.drive.catalog.db, "schema_version", broken)
    r = requests.get(server.url + ".davfs/health", timeout=10)
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert "database is gone" not in r.text  # no internals


def test_the_reserved_folder_is_not_part_of_the_share(start_server):
    server = start_server(users=USERS)
    auth = HTTPDigestAuth("alice", "correct horse")
    for method, path in (("PUT", ".davfs/x"), ("MKCOL", ".davfs"), ("GET", ".davfs/"), ("DELETE", ".davfs")):
        r = requests.request(
            method, server.url + path, data=b"x" if method == "PUT" else None, auth=auth, timeout=10
        )
        assert r.status_code == 404, (method, path, r.status_code)
    assert server.app.drive.catalog.tree.resolve([".davfs"]) is None
    assert requests.put(server.url + ".davfsish", data=b"ok", auth=auth, timeout=10).status_code == 201


def test_every_response_carries_a_request_id(start_server):
    server = start_server()
    mine = requests.get(server.url, headers={"X-Request-ID": "lb-7f3a.1"}, timeout=10)
    assert mine.headers["X-Request-ID"] == "lb-7f3a.1"
    odd = requests.get(server.url, headers={"X-Request-ID": "<script>" + "x" * 100}, timeout=10)
    assert re.fullmatch(r"[0-9a-f]{16}", odd.headers["X-Request-ID"])  # replaced, not echoed
    first = requests.get(server.url, timeout=10).headers["X-Request-ID"]
    assert first != requests.get(server.url, timeout=10).headers["X-Request-ID"]


def test_one_access_line_per_request_and_no_secret_in_any_log(start_server, caplog: pytest.LogCaptureFixture):
    server = start_server(users=USERS)
    caplog.set_level(logging.DEBUG)
    requests.put(
        server.url + "f.txt", data=b"12345", auth=HTTPDigestAuth("alice", "correct horse"), timeout=10
    )
    requests.get(server.url + "f.txt", auth=HTTPBasicAuth("alice", "correct horse"), timeout=10)
    requests.get(server.url + "f.txt", auth=HTTPBasicAuth("alice", "wrong secret"), timeout=10)
    requests.get(
        server.url + "f.txt",
        headers={"X-Request-ID": "trace-42"},
        auth=HTTPDigestAuth("alice", "correct horse"),
        timeout=10,
    )
    access = [r.getMessage() for r in caplog.records if r.name == "davfs.access"]
    assert any(
        line.startswith("id=")
        and "method=PUT" in line
        and 'path="/f.txt"' in line
        and "status=201" in line
        and "in=5" in line
        and "user=alice" in line
        for line in access
    ), access
    assert any("id=trace-42" in line and "status=200" in line and "out=5" in line for line in access), access
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("correct horse", "wrong secret", "Y29ycmVjdCBob3JzZQ", "YWxpY2U6Y29ycmVjdCBob3JzZQ"):
        assert secret not in everything
