"""The trash and versions pages (issue 19): a person restores with a click in a real
browser (headless Chromium driven over its DevTools protocol), behind the share's
login, and another site cannot make their browser do it."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from requests.auth import HTTPDigestAuth

from tests.conftest import RunningServer
from tests.test_browser import (
    CHROMIUM_FLAGS,
    CHROMIUM_TIMEOUT,
    PNG_SIGNATURE,
    _kill_group,
    artifacts_dir,
    chromium_binary,
)

TOKEN = re.compile(r'name="token" value="([0-9a-f]{64})"')
ITEM = re.compile(r'name="item" value="(\d+)"')


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol: go to a URL,
    click, read the page, take a screenshot. Every wait is bounded."""

    def __init__(self, profile: Path) -> None:
        profile.mkdir(parents=True)
        self._process = subprocess.Popen(
            [
                chromium_binary(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--window-size=1280,720",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + CHROMIUM_TIMEOUT
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.close()
                pytest.fail("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(p for p in pages if p["type"] == "page")
        self._socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=CHROMIUM_TIMEOUT, suppress_origin=True
        )
        self._last_id = 0
        self._events: list[str] = []
        self.call("Page.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        self._socket.send(json.dumps({"id": self._last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._last_id:
                assert "error" not in message, (method, message["error"])
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self._events.append(message["method"])

    def _wait_for_load(self) -> None:
        while "Page.loadEventFired" not in self._events:
            message = json.loads(self._socket.recv())
            if "method" in message:
                self._events.append(message["method"])
        self._events.clear()

    def go(self, url: str) -> None:
        self._events.clear()
        self.call("Page.navigate", url=url)
        self._wait_for_load()

    def read(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def click(self, selector: str) -> None:
        """Click the element and wait for the page it leads to."""
        self._events.clear()
        found = self.read(
            f"(e => e ? (e.click(), true) : false)(document.querySelector({json.dumps(selector)}))"
        )
        assert found, f"nothing matches {selector} on {self.read('location.href')}"
        self._wait_for_load()

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            self._socket.close()
        except AttributeError:
            pass
        _kill_group(self._process.pid)
        self._process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


def test_a_person_restores_a_deleted_folder_and_an_old_version_in_the_browser(
    start_server: Callable[..., RunningServer], browser: Browser
) -> None:
    running = start_server()
    url = running.url
    assert requests.request("MKCOL", url + "Fotos").status_code == 201
    photo = b"\x89PNG pretend" * 500
    requests.put(url + "Fotos/strand.png", data=photo).raise_for_status()
    assert requests.delete(url + "Fotos").status_code == 204
    first, second = b"the first draft\n", b"the draft after a bad edit\n"
    requests.put(url + "brief.txt", data=first).raise_for_status()
    requests.put(url + "brief.txt", data=second).raise_for_status()

    browser.go(url)
    browser.click("header nav a")  # "Trash"
    assert browser.read("document.querySelector('h1').textContent") == "Trash of /"
    assert "/Fotos/" in browser.read("document.querySelector('tbody').textContent")
    shot = artifacts_dir() / "browser-trash.png"
    browser.screenshot(shot)
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    browser.click("form.restore button")
    assert "Restored to /Fotos" in browser.read("document.querySelector('p.note').textContent")
    assert requests.get(url + "Fotos/strand.png").content == photo

    browser.go(url)
    browser.click("a.versions[href^='brief.txt']")
    assert browser.read("document.querySelector('h1').textContent") == "Versions of /brief.txt"
    browser.screenshot(artifacts_dir() / "browser-versions.png")
    browser.click("form.restore button")  # the only button: version 1 (2 is current)
    assert "Version 1 is the current content again" in browser.read(
        "document.querySelector('p.note').textContent"
    )
    assert requests.get(url + "brief.txt").content == first


USERS = {"alice": "alice's long passphrase", "bob": "bob's long passphrase"}
READER_PASSWORD = "reader's long passphrase"
READER = {"password": READER_PASSWORD, "read_only": True}


def _trashed(running: RunningServer, auth: HTTPDigestAuth) -> tuple[str, str]:
    """Put /doc.txt in the trash; the trash page's token and item id."""
    requests.put(running.url + "doc.txt", data=b"precious", auth=auth).raise_for_status()
    assert requests.delete(running.url + "doc.txt", auth=auth).status_code == 204
    page = requests.get(running.url + "?davfs=trash", auth=auth)
    assert page.status_code == 200 and page.headers["X-Frame-Options"] == "DENY"
    token, item = TOKEN.search(page.text), ITEM.search(page.text)
    assert token is not None and item is not None
    return token.group(1), item.group(1)


def test_a_restore_must_come_from_this_servers_own_page(start_server: Callable[..., RunningServer]) -> None:
    running = start_server(users={**USERS, "reader": READER})
    alice, bob = HTTPDigestAuth("alice", USERS["alice"]), HTTPDigestAuth("bob", USERS["bob"])
    token, item = _trashed(running, alice)
    own = running.url.rstrip("/")

    def post(auth: HTTPDigestAuth, headers: dict[str, str], **form: str) -> requests.Response:
        return requests.post(
            running.url + "?davfs=trash", data=form, headers=headers, auth=auth, allow_redirects=False
        )

    assert requests.get(running.url + "?davfs=trash").status_code == 401  # behind the login
    refused = [
        post(alice, {"Origin": "https://evil.example"}, token=token, item=item),  # another site's form
        post(alice, {"Referer": "https://evil.example/page"}, token=token, item=item),
        post(alice, {"Sec-Fetch-Site": "cross-site"}, token=token, item=item),
        post(alice, {"Origin": own}, token="0" * 64, item=item),  # no token of this server
        post(alice, {"Origin": own}, item=item),
        post(bob, {"Origin": own}, token=token, item=item),  # another user's token
        post(HTTPDigestAuth("reader", READER_PASSWORD), {"Origin": own}, token=token, item=item),
    ]
    assert [r.status_code for r in refused] == [403] * 7, [r.text for r in refused]
    assert requests.get(running.url + "doc.txt", auth=alice).status_code == 404  # still in the trash
    assert post(alice, {"Origin": own}, token=token, item="x").status_code == 400
    too_big = requests.post(
        running.url + "?davfs=trash",
        data={"token": token, "item": item, "pad": "x" * 5000},
        headers={"Origin": own},
        auth=alice,
        allow_redirects=False,
    )
    assert too_big.status_code == 400

    done = post(alice, {"Origin": own}, token=token, item=item)
    assert done.status_code == 303 and done.headers["Location"] == "/?davfs=trash&restored=%2Fdoc.txt"
    assert requests.get(running.url + "doc.txt", auth=alice).content == b"precious"
    again = post(alice, {"Origin": own}, token=token, item=item)
    assert again.status_code == 404 and "does not exist" in again.text  # restored once only


def test_the_pages_answer_bad_requests_with_clear_errors(start_server: Callable[..., RunningServer]) -> None:
    running = start_server()
    assert requests.request("MKCOL", running.url + "folder").status_code == 201
    requests.put(running.url + "a.txt", data=b"a").raise_for_status()
    versions_of_folder = requests.get(running.url + "folder?davfs=versions")
    assert versions_of_folder.status_code == 409 and "is not a file" in versions_of_folder.text
    missing = requests.get(running.url + "gone.txt?davfs=versions")
    assert missing.status_code == 404 and "does not exist" in missing.text
    head = requests.head(running.url + "a.txt?davfs=versions")
    assert head.status_code == 200 and head.content == b""
    # Not one of the pages: the share answers as it always did.
    assert requests.get(running.url + "a.txt?davfs=other").content == b"a"
    assert (
        requests.request("PROPFIND", running.url + "?davfs=trash", headers={"Depth": "0"}).status_code == 207
    )
