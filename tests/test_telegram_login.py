"""`davfs login` against the fake Telegram: sign-in flows, access checks, clear errors."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from davfs.chunk import ChunkMeta
from davfs.cli import main as cli_main
from davfs.errors import ConfigError
from davfs.stores.telegram_accounts import LoginPrompts, SessionFile, login, session_files
from davfs.testing.telegram_fake import DEFAULT_API_HASH, DEFAULT_API_ID
from tests.telegram_rig import CHANNEL, TelegramRig

PHONE = "+15550002"


def prompts(telegram: TelegramRig, *, phone: str = PHONE, password: str = "") -> LoginPrompts:
    return LoginPrompts(
        phone=lambda: phone, code=lambda: telegram.fake.last_code(phone), password=lambda: password
    )


def fresh_data_dir(telegram: TelegramRig, tmp_path: Path) -> Path:
    """A data folder nobody has signed in to yet."""
    return tmp_path / "fresh"


def test_a_user_signs_in_with_phone_and_code(telegram: TelegramRig, tmp_path: Path) -> None:
    user = telegram.fake.add_user(PHONE)
    telegram.fake.set_admin(telegram.channel, user, {"post", "delete"})
    data_dir = fresh_data_dir(telegram, tmp_path)
    saved = login(telegram.settings(), data_dir, bot_token=None, prompts=prompts(telegram))
    assert saved.kind == "user" and saved.path == data_dir / "telegram" / f"user-{user.id}.session"
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o600
    assert SessionFile.load(saved.path).peer is not None  # resolved once, kept
    assert telegram.fake.messages(telegram.channel) == []  # the check message was deleted
    assert telegram.fake.requests["SendMediaRequest"] == 1 and telegram.fake.requests["GetFileRequest"] >= 1


def test_two_step_verification(telegram: TelegramRig, tmp_path: Path) -> None:
    user = telegram.fake.add_user(PHONE, password="correct horse")
    telegram.fake.set_admin(telegram.channel, user, {"post", "delete"})
    data_dir = fresh_data_dir(telegram, tmp_path)
    with pytest.raises(ConfigError, match="wrong password"):
        login(telegram.settings(), data_dir, bot_token=None, prompts=prompts(telegram, password="battery"))
    assert session_files(data_dir) == []
    saved = login(
        telegram.settings(), data_dir, bot_token=None, prompts=prompts(telegram, password="correct horse")
    )
    assert saved.kind == "user"


def test_a_bot_signs_in_with_its_token(telegram: TelegramRig, tmp_path: Path) -> None:
    bot = telegram.fake.add_bot("424242:token")
    telegram.fake.set_admin(telegram.channel, bot, {"post", "delete"})
    saved = login(
        telegram.settings(), tmp_path / "fresh", bot_token="424242:token", prompts=prompts(telegram)
    )
    assert saved.kind == "bot" and saved.path.name == "bot-424242.session"


@pytest.mark.parametrize(
    ("setup", "settings", "token", "message"),
    [
        ("none", {"api_id": 999}, None, "my.telegram.org"),
        ("none", {}, "1:wrong", "BotFather"),
        ("none", {"channel": "@no_such_channel"}, None, "cannot find"),
        ("member", {}, None, "cannot post"),
        ("none", {"channel": "me"}, "424243:bot", "Saved Messages"),
    ],
)
def test_login_problems_are_one_clear_line_and_save_nothing(
    telegram: TelegramRig,
    tmp_path: Path,
    setup: str,
    settings: dict[str, Any],
    token: str | None,
    message: str,
) -> None:
    user = telegram.fake.add_user(PHONE)
    telegram.fake.add_bot("424243:bot")
    if setup == "member":
        telegram.fake.add_member(telegram.channel, user)
    else:
        telegram.fake.set_admin(telegram.channel, user, {"post", "delete"})
    data_dir = tmp_path / "fresh"
    with pytest.raises(ConfigError, match=message):
        login(telegram.settings(**settings), data_dir, bot_token=token, prompts=prompts(telegram))
    assert session_files(data_dir) == []


def test_an_expired_session_says_to_log_in_again(telegram: TelegramRig) -> None:
    telegram.fake.revoke(telegram.user)
    with pytest.raises(ConfigError, match="davfs login"):
        telegram.open_store()


def test_the_cli_prints_what_to_configure(
    telegram: TelegramRig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    user = telegram.fake.add_user(PHONE)
    telegram.fake.set_admin(telegram.channel, user, {"post", "delete"})
    answers = iter([PHONE, "placeholder"])

    def answer(_prompt: str) -> str:
        value = next(answers)
        return telegram.fake.last_code(PHONE) if value == "placeholder" else value

    monkeypatch.setattr("builtins.input", answer)
    for key, value in {
        "DAVFS_STORE": "telegram",
        "DAVFS_TELEGRAM_CHANNEL": CHANNEL,
        "DAVFS_TELEGRAM_API_ID": str(DEFAULT_API_ID),
        "DAVFS_TELEGRAM_API_HASH": DEFAULT_API_HASH,
    }.items():
        monkeypatch.setenv(key, value)
    data_dir = tmp_path / "cli"
    assert cli_main(["-c", "/dev/null", "-d", str(data_dir), "login"]) == 0
    out = capsys.readouterr().out
    assert "store: telegram" in out and CHANNEL in out and DEFAULT_API_HASH not in out
    assert len(session_files(data_dir)) == 1
    # A new drive is encrypted: its key wrapped here and in the channel, the passphrase
    # printed once (and kept here, mode 0600, so the server starts on its own).
    assert "encryption: on" in out
    printed = re.search(r"\n    ([0-9a-f]{6}(?:-[0-9a-f]{6}){5})\n", out)
    assert printed is not None, out
    assert (data_dir / "passphrase").read_text().strip() == printed.group(1)
    assert stat.S_IMODE((data_dir / "passphrase").stat().st_mode) == 0o600
    assert (data_dir / "drive.key").is_file()
    captions = [m.text for m in telegram.fake.messages(telegram.channel)]
    assert len(captions) == 1 and captions[0].startswith("davfs-chunk/2 ")
    assert cli_main(["-c", "/dev/null", "-d", str(data_dir), "status"]) == 0
    assert "encryption: on (key " in capsys.readouterr().out

    monkeypatch.setenv("DAVFS_TELEGRAM_API_ID", "1")
    assert cli_main(["-c", "/dev/null", "-d", str(data_dir), "login", "--bot-token", "1:x"]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "my.telegram.org" in err


def test_an_invite_link_is_resolved_once_and_kept(telegram: TelegramRig, tmp_path: Path) -> None:
    user = telegram.fake.add_user(PHONE)
    private = telegram.fake.add_channel(
        "private store", invite_hash="AbCdEf123", admins={user: {"post", "delete"}}
    )
    settings = telegram.settings(channel="https://t.me/+AbCdEf123")
    saved = login(settings, tmp_path / "fresh", bot_token=None, prompts=prompts(telegram))
    assert saved.peer == {"channel_id": private.id, "access_hash": telegram.fake.channel_hash(private, user)}


def test_saved_messages_hold_chunks_for_a_user(telegram: TelegramRig) -> None:
    store = telegram.open_store(channel="me")
    data = os.urandom(3 * 1024 * 1024)
    locator = store.put(data, ChunkMeta.of(data))
    assert store.get(locator, 1024 * 1024, 5) == data[1024 * 1024 : 1024 * 1024 + 5]
    assert [m.id for m in telegram.fake.messages(telegram.user)] == [int(locator)]
    assert telegram.fake.messages(telegram.channel) == []
