"""Authentication over real HTTP(S): Digest for Windows over http, Basic over TLS,
read-only users, the generated first user, and the Windows set-up it prints."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

from davfs.auth import password_hash
from tests.conftest import REPO

USERS = {
    "alice": "wonderland",
    "reader": {"password_hash": password_hash("reader", "look only"), "read_only": True},
}
ALICE = HTTPDigestAuth("alice", "wonderland")
READER = HTTPDigestAuth("reader", "look only")
LOCKINFO = """<?xml version="1.0" encoding="utf-8" ?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>
<D:owner><D:href>DOMAIN\\user</D:href></D:owner></D:lockinfo>"""
PROPPATCH = """<?xml version="1.0" encoding="utf-8" ?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop><Z:colour>red</Z:colour></D:prop></D:set></D:propertyupdate>"""


@pytest.fixture
def secured(start_server):
    return start_server(users=USERS, chunk_size="1MiB")


def test_digest_is_the_challenge_over_http_and_a_round_trip_works(secured):
    r = requests.request("PROPFIND", secured.url, headers={"Depth": "0"}, timeout=10)
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Digest ") and 'realm="davfs"' in challenge
    assert "algorithm=MD5" in challenge and 'qop="auth"' in challenge
    data = os.urandom(1024 * 1024 + 5)
    with requests.Session() as session:
        session.auth = ALICE
        assert session.put(secured.url + "f.bin", data=data).status_code == 201
        assert session.get(secured.url + "f.bin").content == data
        assert session.request("PROPFIND", secured.url, headers={"Depth": "1"}).status_code == 207


def test_wrong_credentials_are_401_and_change_nothing(secured):
    requests.put(secured.url + "f.txt", data=b"original", auth=ALICE, timeout=10)
    attempts = [
        HTTPDigestAuth("alice", "wrong"),
        HTTPBasicAuth("alice", "wrong"),
        HTTPDigestAuth("mallory", "wonderland"),
        HTTPBasicAuth("ALICE", "wonderland"),
    ]
    for auth in attempts:
        assert requests.put(secured.url + "f.txt", data=b"changed", auth=auth, timeout=10).status_code == 401
        assert requests.delete(secured.url + "f.txt", auth=auth, timeout=10).status_code == 401
        assert requests.put(secured.url + "new.txt", data=b"x", auth=auth, timeout=10).status_code == 401
    for garbage in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic", "Bearer x"):
        r = requests.get(secured.url + "f.txt", headers={"Authorization": garbage}, timeout=10)
        assert r.status_code == 401, garbage
    assert requests.get(secured.url + "f.txt", auth=ALICE, timeout=10).content == b"original"
    assert secured.app.drive.catalog.tree.resolve(["new.txt"]) is None


def test_basic_is_accepted_when_a_client_sends_it_unasked(secured):
    """rclone and curl send Basic without waiting for a challenge."""
    basic = HTTPBasicAuth("alice", "wonderland")
    assert requests.put(secured.url + "b.txt", data=b"basic", auth=basic, timeout=10).status_code == 201
    assert requests.get(secured.url + "b.txt", auth=basic, timeout=10).content == b"basic"


def test_a_read_only_user_reads_but_every_write_method_is_403(secured):
    requests.put(secured.url + "f.txt", data=b"keep me", auth=ALICE, timeout=10)
    requests.request("MKCOL", secured.url + "dir", auth=ALICE, timeout=10)
    assert requests.get(secured.url + "f.txt", auth=READER, timeout=10).content == b"keep me"
    assert requests.head(secured.url + "f.txt", auth=READER, timeout=10).status_code == 200
    assert requests.options(secured.url, auth=READER, timeout=10).status_code == 200
    r = requests.request("PROPFIND", secured.url, headers={"Depth": "1"}, auth=READER, timeout=10)
    assert r.status_code == 207 and "f.txt" in r.text
    here, there = secured.url + "f.txt", secured.url + "dir/g.txt"
    writes = [
        ("PUT", here, {}, b"overwritten"),
        ("PUT", secured.url + "new.txt", {}, b"x"),
        ("DELETE", here, {}, None),
        ("MKCOL", secured.url + "other", {}, None),
        ("COPY", here, {"Destination": there}, None),
        ("MOVE", here, {"Destination": there}, None),
        ("PROPPATCH", here, {"Content-Type": "text/xml"}, PROPPATCH),
        ("LOCK", here, {"Content-Type": "text/xml"}, LOCKINFO),
        ("LOCK", secured.url + "lock-null.txt", {"Content-Type": "text/xml"}, LOCKINFO),
        ("UNLOCK", here, {"Lock-Token": "<opaquelocktoken:x>"}, None),
    ]
    for method, url, headers, body in writes:
        r = requests.request(method, url, headers=headers, data=body, auth=READER, timeout=10)
        assert r.status_code == 403, (method, url, r.status_code)
    assert requests.get(here, auth=ALICE, timeout=10).content == b"keep me"
    catalog = secured.app.drive.catalog
    assert {node.name for node in catalog.tree.children(catalog.tree.resolve([]).id)} == {"f.txt", "dir"}
    assert catalog.tree.dead_props(catalog.tree.resolve(["f.txt"]).id) == {}


def test_an_anonymous_upload_is_refused_and_the_server_keeps_serving(secured):
    """Checklist 34: a large PUT without credentials gets its 401 and breaks nothing."""
    try:
        r = requests.put(secured.url + "big.bin", data=os.urandom(8 * 1024 * 1024), timeout=30)
        assert r.status_code == 401
    except requests.ConnectionError:
        pass  # the server may close instead of reading 8 MiB nobody may store
    assert secured.app.drive.catalog.tree.resolve(["big.bin"]) is None
    assert requests.put(secured.url + "ok.txt", data=b"ok", auth=ALICE, timeout=10).status_code == 201


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls_offers_basic_and_serves_files(start_server, tmp_path):
    cert, key = _self_signed(tmp_path)
    server = start_server(users=USERS, ssl_certificate=str(cert), ssl_private_key=str(key))
    assert server.url.startswith("https://")
    r = requests.get(server.url, verify=str(cert), timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")
    basic = HTTPBasicAuth("alice", "wonderland")
    data = os.urandom(300_000)
    assert (
        requests.put(server.url + "t.bin", data=data, auth=basic, verify=str(cert), timeout=10).status_code
        == 201
    )
    assert requests.get(server.url + "t.bin", auth=ALICE, verify=str(cert), timeout=10).content == data
    with pytest.raises(requests.ConnectionError):  # plain http on the TLS port is not served
        requests.get(server.url.replace("https", "http"), timeout=10)


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(start_server, tmp_path):
    from davfs.errors import ConfigError

    cert, _ = _self_signed(tmp_path / "a")
    _, other_key = _self_signed(tmp_path / "b")
    with pytest.raises(ConfigError, match="ssl_certificate"):
        start_server(users=USERS, ssl_certificate=str(cert), ssl_private_key=str(other_key))


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "davfs.cli", *args],
        env={"DAVFS_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})},
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_first_start_makes_up_a_user_and_prints_how_to_connect(server_process, tmp_path):
    data = tmp_path / "data"
    first = server_process(data, env={"DAVFS_ANONYMOUS": "false"})
    credentials = data / "generated-user.yaml"
    assert credentials.stat().st_mode & 0o777 == 0o600
    first.stop()
    out = first.log()
    password_match = re.search(r"password: (\S+)", out)
    user_match = re.search(r"user: +(\S+)", out)
    assert password_match is not None and user_match is not None
    password = password_match.group(1)
    user = user_match.group(1)
    assert f"net use Z: {first.url} /user:{user} {password}" in out
    assert "mount_webdav" in out and "rclone config create" in out
    assert password in credentials.read_text()
    again = server_process(data, env={"DAVFS_ANONYMOUS": "false"})
    assert requests.get(again.url, timeout=10).status_code == 401
    auth = HTTPDigestAuth(user, password)
    assert requests.put(again.url + "x.txt", data=b"x", auth=auth, timeout=10).status_code == 201
    assert requests.get(again.url + "x.txt", auth=auth, timeout=10).content == b"x"


def test_hash_password_prints_a_hash_the_server_accepts(start_server, tmp_path):
    result = _run(tmp_path, "hash-password", "erin", stdin="s3cret\ns3cret\n")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    match = re.search(r"password_hash: ([0-9a-f]{32})", result.stdout)
    assert match is not None
    digest = match.group(1)
    server = start_server(users={"erin": {"password_hash": digest}})
    auth = HTTPDigestAuth("erin", "s3cret")
    assert requests.put(server.url + "e.txt", data=b"e", auth=auth, timeout=10).status_code == 201
    mismatch = _run(tmp_path, "hash-password", "erin", stdin="one\ntwo\n")
    assert mismatch.returncode == 1 and "password_hash" not in mismatch.stdout


def test_windows_setup_prints_the_registry_lines_and_writes_a_reg_file(tmp_path):
    result = _run(tmp_path, "windows-setup", env={"DAVFS_USERS": "{alice: x}", "DAVFS_PORT": "8123"})
    assert result.returncode == 0, result.stderr
    assert "net use Z: http://127.0.0.1:8123/ /user:alice * /persistent:yes" in result.stdout
    assert "sc config webclient start= auto" in result.stdout
    assert "FileSizeLimitInBytes /t REG_DWORD /d 4294967295" in result.stdout
    raw = (tmp_path / "davfs-windows.reg").read_bytes()
    assert raw.startswith(b"\xff\xfe")  # regedit reads UTF-16LE with a BOM
    reg = raw[2:].decode("utf-16-le")
    assert reg.startswith("Windows Registry Editor Version 5.00\r\n")
    assert "[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\WebClient\\Parameters]" in reg
    assert '"FileSizeLimitInBytes"=dword:ffffffff' in reg
    assert re.search(r'"FileAttributesLimitInBytes"=dword:[0-9a-f]{8}', reg)
    assert "BasicAuthLevel" in reg and '"BasicAuthLevel"' not in reg  # explained, not lowered
