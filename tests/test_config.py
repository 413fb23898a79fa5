"""Configuration: file + environment → one validated config; bad values name their key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from davfs.config import MiB, load_config
from davfs.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wsgidav.yaml"
    path.write_text(text)
    return path


def test_defaults_serve_data_on_loopback_8080(tmp_path):
    config = load_config(write(tmp_path, ""), environ={})
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.data_dir == Path("data")
    assert config.store == "local:data/store"
    assert config.catalog_url == "sqlite:///data/catalog.sqlite"
    assert config.chunk_size == 20 * MiB
    assert not config.anonymous and not config.users  # the server makes a user up


def test_the_shipped_wsgidav_yaml_is_valid_and_matches_the_defaults():
    config = load_config(REPO / "wsgidav.yaml", environ={})
    assert (config.host, config.port, config.chunk_size) == ("127.0.0.1", 8080, 20 * MiB)
    assert config.data_dir == Path("data") and not config.anonymous and not config.users


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "port: 9000\ndavfs:\n  chunk_size: 8MiB\n  data_dir: /srv/a\n")
    config = load_config(
        path, environ={"DAVFS_PORT": "9100", "DAVFS_CHUNK_SIZE": "64 MiB", "DAVFS_DATA_DIR": "/srv/b"}
    )
    assert config.port == 9100 and config.chunk_size == 64 * MiB and config.data_dir == Path("/srv/b")
    assert config.store == "local:/srv/b/store"


def test_davfs_config_names_the_file(tmp_path):
    path = write(tmp_path, "port: 9999\n")
    assert load_config(environ={"DAVFS_CONFIG": str(path)}).port == 9999


@pytest.mark.parametrize(
    "text, env, key",
    [
        ("port: lots\n", {}, "port"),
        ("", {"DAVFS_PORT": "70000"}, "port"),
        ("davfs:\n  chunk_size: 3.5MiB\n", {}, "davfs.chunk_size"),
        ("davfs:\n  chunk_size: 4000MiB\n", {}, "davfs.chunk_size"),
        ("davfs:\n  chunk_size: 1000\n", {}, "davfs.chunk_size"),
        ("davfs:\n  colour: blue\n", {}, "davfs.colour"),
        ("davfs:\n  threads: 0\n", {}, "davfs.threads"),
        ("davfs:\n  allow_anonymous_remote: maybe\n", {}, "davfs.allow_anonymous_remote"),
        ("davfs: [1, 2]\n", {}, "davfs"),
        ("davfs:\n  catalog_url: catalog.db\n", {}, "davfs.catalog_url"),
        ("davfs:\n  store: ftp://x\n", {}, None),
        ("port: [unclosed\n", {}, "wsgidav.yaml:line"),
        ("- just\n- a list\n", {}, "wsgidav.yaml"),
        ("ssl_certificate: cert.pem\n", {}, "ssl_certificate"),
        ("ssl_certificate: /dev/null\n", {}, "ssl_certificate"),  # no key
        ("davfs:\n  users: [alice]\n", {}, "davfs.users"),
        ("", {"DAVFS_USERS": "{unclosed"}, "davfs.users"),
        ("davfs:\n  users:\n    'a:b': x\n", {}, "davfs.users.a:b"),
        ("davfs:\n  users:\n    alice: ''\n", {}, "davfs.users.alice.password"),
        ("davfs:\n  users:\n    alice: {password_hash: abc}\n", {}, "davfs.users.alice.password_hash"),
        ("davfs:\n  users:\n    alice: {password: x, password_hash: x}\n", {}, "davfs.users.alice"),
        ("davfs:\n  users:\n    alice: {password: x, read_only: maybe}\n", {}, "read_only"),
        ("davfs:\n  users:\n    alice: {password: x, admin: true}\n", {}, "davfs.users.alice"),
        ("davfs:\n  anonymous: true\n  users: {alice: x}\n", {}, "davfs.anonymous"),
        ("simple_dc:\n  user_mapping: {'*': true}\n", {}, "simple_dc"),
        ("http_authenticator:\n  domain_controller: x\n", {}, "http_authenticator"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, env, key):
    if key is None:  # store URLs are checked when the store is opened
        from davfs.stores import open_store

        with pytest.raises(ConfigError, match="davfs.store"):
            open_store(load_config(write(tmp_path, text), environ=env).store)
        return
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=env)
    assert key in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_anonymous_access_on_a_public_address_is_refused(tmp_path):
    anonymous = "host: 0.0.0.0\ndavfs:\n  anonymous: true\n"
    with pytest.raises(ConfigError, match="anonymous"):
        load_config(write(tmp_path, anonymous), environ={})
    allowed = load_config(write(tmp_path, anonymous + "  allow_anonymous_remote: true\n"), environ={})
    assert allowed.host == "0.0.0.0" and allowed.anonymous
    assert not load_config(write(tmp_path, "host: 0.0.0.0\n"), environ={}).anonymous  # a user is generated
    assert load_config(write(tmp_path, "host: ::1\ndavfs:\n  anonymous: true\n"), environ={}).host == "::1"


def test_users_come_from_the_file_or_the_environment_and_keep_only_a_hash(tmp_path):
    text = "davfs:\n  users:\n    alice: secret\n    bob: {password_hash: 0123456789ABCDEF0123456789abcdef, read_only: true}\n"
    config = load_config(write(tmp_path, text), environ={})
    assert set(config.users) == {"alice", "bob"}
    assert config.users["alice"].password_matches("secret") and not config.users["alice"].read_only
    assert config.users["bob"].read_only and config.users["bob"].ha1 == "0123456789abcdef0123456789abcdef"
    assert "secret" not in repr(config) and "0123456789" not in repr(config)
    from_env = load_config(
        write(tmp_path, text), environ={"DAVFS_USERS": '{"carol": {"password": "pw", "read_only": true}}'}
    )
    assert list(from_env.users) == ["carol"] and from_env.users["carol"].password_matches("pw")


def test_bad_config_exits_nonzero_with_one_line(tmp_path):
    path = write(tmp_path, "davfs:\n  chunk_size: huge\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "run_server.py")],
        env={"DAVFS_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "davfs.chunk_size" in lines[0] and "Traceback" not in result.stderr


def test_public_bind_without_users_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "run_server.py"), "--host", "0.0.0.0"],
        env={"DAVFS_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin", "DAVFS_ANONYMOUS": "true"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "anonymous" in result.stderr
    assert not (tmp_path / "data").exists()


def run_server(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, str(REPO / "run_server.py"), *args],
        env={"DAVFS_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin", **(env or {})},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_up_failures_are_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = run_server(tmp_path, "--port", str(taken.getsockname()[1]))
    assert busy.returncode != 0 and "Traceback" not in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1, busy.stderr

    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "catalog.sqlite").write_bytes(b"this is not a database" * 100)
    broken = run_server(tmp_path, "--port", "0")
    assert broken.returncode != 0 and "Traceback" not in broken.stderr
    assert "catalog" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1, broken.stderr

    (tmp_path / "file").write_bytes(b"x")
    unwritable = run_server(tmp_path, "--port", "0", env={"DAVFS_DATA_DIR": str(tmp_path / "file" / "data")})
    assert unwritable.returncode != 0 and "Traceback" not in unwritable.stderr, unwritable.stderr


HASH = "0123456789abcdef0123456789abcdef"


def test_the_telegram_section_with_secrets_from_the_environment(tmp_path):
    text = "davfs:\n  store: telegram\n  telegram:\n    channel: '@store'\n    parallelism: 4\n"
    env = {"DAVFS_TELEGRAM_API_ID": "12345", "DAVFS_TELEGRAM_API_HASH": HASH}
    config = load_config(write(tmp_path, text), environ=env)
    assert config.telegram is not None
    assert (config.telegram.channel, config.telegram.api_id, config.telegram.parallelism) == (
        "@store",
        12345,
        4,
    )
    assert config.telegram.api_hash == HASH
    assert config.chunk_size == 64 * MiB  # each chunk costs a message
    assert HASH not in repr(config)  # nothing secret in logs or tracebacks


def test_local_stores_ignore_the_telegram_section(tmp_path):
    config = load_config(write(tmp_path, "davfs:\n  telegram:\n    channel: '@x'\n"), environ={})
    assert config.telegram is None and config.chunk_size == 20 * MiB


@pytest.mark.parametrize(
    ("telegram", "key"),
    [
        ("    colour: blue\n", "davfs.telegram.colour"),
        ("    api_hash: not-hex\n", "davfs.telegram.api_hash"),
        ("    api_id: -1\n", "davfs.telegram.api_id"),
        ("    parallelism: 0\n", "davfs.telegram.parallelism"),
        ("    channel: ''\n", "davfs.telegram.channel"),
    ],
)
def test_bad_telegram_settings_name_their_key(tmp_path, telegram, key):
    text = "davfs:\n  store: telegram\n  telegram:\n" + telegram
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), environ={})
    assert raised.value.args[0] == key


def test_telegram_without_a_login_says_what_to_do(tmp_path):
    from davfs.stores import open_store

    text = f"davfs:\n  store: telegram\n  data_dir: {tmp_path / 'data'}\n  telegram:\n    api_id: 1\n    api_hash: {HASH}\n"
    with pytest.raises(ConfigError, match="davfs login"):
        config = load_config(write(tmp_path, text), environ={})
        open_store(config.store, telegram=config.telegram, data_dir=config.data_dir)
