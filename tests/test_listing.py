"""The fast Depth-1 listing says exactly what wsgidav's own PROPFIND says."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
import requests

from davfs import listing
from tests.conftest import MiB, RunningServer

DAV = "{DAV:}"
PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
    "<Z:note>a &amp; b &lt;c&gt;</Z:note></D:prop></D:set></D:propertyupdate>"
)
LOCK = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    "<D:locktype><D:write/></D:locktype><D:owner>me</D:owner></D:lockinfo>"
)


def body(*names: str) -> bytes:
    props = "".join(f"<D:{n}/>" for n in names)
    return f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>{props}</D:prop></D:propfind>'.encode()


BODIES = {
    "empty": b"",
    "allprop": b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>',
    "explorer": body(
        "resourcetype", "getcontentlength", "getlastmodified", "creationdate", "getetag", "displayname"
    ),
    "all-named": body(*listing.NAMED),
    "two": body("getetag", "resourcetype"),
}


def parsed(xml: bytes) -> dict[str, dict[str, tuple[str, str]]]:
    """{href: {property: (status, canonical XML of its value)}}."""
    result: dict[str, dict[str, tuple[str, str]]] = {}
    for response in ET.fromstring(xml).iter(f"{DAV}response"):
        href = response.findtext(f"{DAV}href") or ""
        props: dict[str, tuple[str, str]] = {}
        for propstat in response.iter(f"{DAV}propstat"):
            status = (propstat.findtext(f"{DAV}status") or "").split()[1]
            for prop in propstat.find(f"{DAV}prop") or []:
                if len(prop):
                    markup = "".join(ET.tostring(child, encoding="unicode") for child in prop)
                    value = ET.canonicalize(f"<v>{markup}</v>")
                else:
                    value = prop.text or ""
                if prop.tag in (f"{DAV}getlastmodified", f"{DAV}creationdate") or "quota" in prop.tag:
                    value = "(present)" if status == "200" else value  # clocks and free space move
                props[prop.tag] = (status, value)
        result[href] = props
    return result


def propfind(url: str, name: str) -> requests.Response:
    return requests.request("PROPFIND", url, data=BODIES[name], headers={"Depth": "1"})


@pytest.fixture
def tree(start_server: Callable[..., RunningServer]) -> str:
    # Names with markup in them need escaping; Windows could not open 'a&b<c>.xml', so a
    # drive with windows_names off holds it (a drive whose files came from elsewhere).
    server = start_server(chunk_size="1MiB", windows_names=False)
    url = server.url + "l\u00efst & co/"
    s = requests.Session()
    assert s.request("MKCOL", url).status_code == 201
    assert s.request("MKCOL", url + "sub folder").status_code == 201
    assert s.put(url + "empty.txt", data=b"").status_code == 201
    assert s.put(url + "big.bin", data=b"x" * (2 * MiB + 1)).status_code == 201
    assert s.put(url + "\u65e5\u672c 100%.pdf", data=b"%PDF").status_code == 201
    assert s.put(url + "a&b<c>.xml", data=b"<x/>").status_code == 201
    assert s.request("PROPPATCH", url + "big.bin", data=PROPPATCH).status_code == 207
    assert s.request("PROPPATCH", url + "sub folder", data=PROPPATCH).status_code == 207
    return url


@pytest.mark.parametrize("name", sorted(BODIES))
def test_fast_listing_equals_wsgidavs(tree: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = propfind(tree, name)
    monkeypatch.setattr(listing, "answer", lambda *args: None)
    slow = propfind(tree, name)
    assert fast.status_code == slow.status_code == 207
    assert fast.headers["Content-Type"] == slow.headers["Content-Type"]
    assert parsed(fast.content) == parsed(slow.content)
    assert len(parsed(fast.content)) == 6  # the folder and its five members


def test_the_fast_path_answers_and_steps_aside(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[Any] = []
    real = listing.answer

    def spy(*a: Any) -> Any:
        answered.append(result := real(*a))
        return result

    monkeypatch.setattr(listing, "answer", spy)
    propfind(tree, "explorer")
    assert answered[-1] is not None
    requests.request("PROPFIND", tree, data=body("getetag", "quota-used-bytes"), headers={"Depth": "1"})
    assert answered[-1] is None  # a property it does not format: wsgidav answers
    locked = requests.request("LOCK", tree + "empty.txt", data=LOCK)
    assert locked.status_code == 200
    response = propfind(tree, "allprop")
    assert answered[-1] is None  # lockdiscovery has content: wsgidav answers
    assert "opaquelocktoken" in response.text


def test_a_malformed_body_still_gets_wsgidavs_400(tree: str) -> None:
    response = requests.request(
        "PROPFIND", tree, data=b"<D:propfind xmlns:D='DAV:'><D:prop>", headers={"Depth": "1"}
    )
    assert response.status_code == 400
