"""Who may use the share: users and their password hashes, read-only users, and the
user davfs makes up on first start.

Windows' WebDAV client refuses Basic authentication over plain HTTP unless the user edits
the registry, so Digest has to work; Digest needs the server to hold, per user,
HA1 = MD5("user:realm:password"). That is the only hash both schemes can check (Basic
recomputes it from the password it is sent), so it is what davfs keeps: a leaked HA1
opens this realm only, and users may put the hash instead of the password in the
config (``davfs hash-password``). The realm is therefore fixed (:data:`REALM`): a stored
hash is bound to it.

wsgidav's :class:`HTTPAuthenticator` does the protocol work; :class:`DavfsUsers` is its
domain controller, and :class:`DavfsAuthenticator` adds three things around it: a
malformed Basic header is a 401 rather than a 500, a read-only user's write requests
end in a 403 before they reach the provider, and Windows' first OPTIONS is answered
without a login.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.util import get_rfc1123_time

from davfs.errors import ConfigError
from davfs.http_policy import METHODS

REALM = "davfs"
"""The authentication realm; part of every stored password hash, so never changed."""

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
"""What a read-only user may send; every other method can change the share."""

GENERATED_USER_FILE = "generated-user.yaml"

_HA1 = re.compile(r"[0-9a-f]{32}")
_BAD_NAME = re.compile(r'[\x00-\x1f\x7f:"\\]')

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class User:
    name: str
    ha1: str = field(repr=False)
    """MD5("name:davfs:password"), what Digest needs and Basic can check."""
    read_only: bool = False

    def password_matches(self, password: str) -> bool:
        return hmac.compare_digest(self.ha1, password_hash(self.name, password))


def password_hash(name: str, password: str) -> str:
    """The hash to store for a user: HA1 of RFC 7616 for :data:`REALM`."""
    return hashlib.md5(f"{name}:{REALM}:{password}".encode()).hexdigest()


def parse_users(section: Any, *, key: str = "davfs.users") -> dict[str, User]:
    """``{name: password}`` or ``{name: {password | password_hash, read_only}}`` → users.

    The same shape comes from wsgidav.yaml and from ``DAVFS_USERS`` (YAML or JSON)."""
    if section is None:
        return {}
    if isinstance(section, str):
        try:
            section = yaml.safe_load(section)
        except yaml.YAMLError:
            raise ConfigError(key, "is not a YAML/JSON mapping of users") from None
    if not isinstance(section, Mapping):
        raise ConfigError(key, "must be a mapping of user name to password or settings")
    return {str(name): _user(str(name), entry, key) for name, entry in section.items()}


def _user(name: str, entry: Any, key: str) -> User:
    where = f"{key}.{name}"
    if not name or _BAD_NAME.search(name):
        raise ConfigError(
            where, "a user name must be non-empty, without ':', '\"', '\\' or control characters"
        )
    if isinstance(entry, (str, int)) and not isinstance(entry, bool):
        entry = {"password": str(entry)}
    if not isinstance(entry, Mapping):
        raise ConfigError(where, "must be a password or a mapping with password/password_hash and read_only")
    unknown = set(entry) - {"password", "password_hash", "read_only"}
    if unknown:
        raise ConfigError(
            where, f"unknown setting {sorted(unknown)[0]!r} (known: password, password_hash, read_only)"
        )
    read_only = entry.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ConfigError(f"{where}.read_only", "must be true or false")
    if ("password" in entry) == ("password_hash" in entry):
        raise ConfigError(where, "give exactly one of password and password_hash")
    if "password" in entry:
        password = str(entry["password"])
        if not password:
            raise ConfigError(f"{where}.password", "is empty")
        return User(name, password_hash(name, password), read_only)
    ha1 = str(entry["password_hash"]).strip().lower()
    if not _HA1.fullmatch(ha1):
        raise ConfigError(f"{where}.password_hash", "must be the 32 hex digits `davfs hash-password` prints")
    return User(name, ha1, read_only)


@dataclass(frozen=True)
class GeneratedUser:
    """The user made up on the first start without configured users, kept (mode 0600)
    in the data folder so the same password works after a restart."""

    name: str
    password: str = field(repr=False)
    path: Path

    @property
    def user(self) -> User:
        return User(self.name, password_hash(self.name, self.password))


def generated_user(data_dir: Path) -> GeneratedUser:
    """Read the generated user from the data folder, or create it there."""
    path = data_dir / GENERATED_USER_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_generated_user(path)
    user = GeneratedUser("davfs", secrets.token_urlsafe(12), path)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(
            "# Made by davfs on its first start because no users were configured\n"
            "# (davfs.users in wsgidav.yaml or DAVFS_USERS). Delete this file for a new password.\n"
        )
        yaml.safe_dump({"user": user.name, "password": user.password}, file)
        file.flush()
        os.fsync(file.fileno())
    return user


def _read_generated_user(path: Path) -> GeneratedUser:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        name, password = str(data["user"]), str(data["password"])
    except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise ConfigError(str(path), f"unreadable ({exc}); delete it and davfs makes a new user") from None
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return GeneratedUser(name, password, path)


class DavfsUsers(BaseDomainController):  # type: ignore[misc]
    """wsgidav's view of our users: one realm, Digest and Basic, roles for read-only.

    wsgidav builds it from its config dict, where :func:`wsgidav_auth_config` put the
    users (``davfs_users``; ``None`` means anonymous access)."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        self.users: dict[str, User] | None = config["davfs_users"]

    def get_domain_realm(self, path_info: str, environ: dict[str, Any] | None) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict[str, Any] | None) -> bool:
        return self.users is not None

    def basic_auth_user(self, realm: str, user_name: str, password: str, environ: dict[str, Any]) -> bool:
        user = (self.users or {}).get(user_name)
        if user is None or not user.password_matches(password):
            return False
        _set_roles(environ, user)
        return True

    def supports_http_digest_auth(self) -> bool:
        return True

    def digest_auth_user(self, realm: str, user_name: str, environ: dict[str, Any]) -> str | bool:
        user = (self.users or {}).get(user_name)
        if user is None or realm != REALM:
            return False
        _set_roles(environ, user)
        return user.ha1


def _set_roles(environ: dict[str, Any], user: User) -> None:
    environ["wsgidav.auth.roles"] = ("reader",) if user.read_only else ("editor",)


class DavfsAuthenticator(HTTPAuthenticator):  # type: ignore[misc]
    """wsgidav's authenticator, with read-only users held to :data:`READ_METHODS`, a
    malformed Basic header answered like a wrong password (wsgidav raises on it: 500),
    and an OPTIONS without credentials answered without a login.

    Windows' mini-redirector sends its first OPTIONS without credentials and gives up
    ("the folder you entered does not appear to be valid") when that is refused; IIS
    answers it. The answer reveals only what any WebDAV server says of itself (the
    DAV classes and the methods), the same for every path, so it tells nobody whether
    a path exists; the next request asks for the login as before."""

    def __init__(self, wsgidav_app: Any, next_app: WsgiApp, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, _refuse_writes_of_readers(next_app), config)
        self._requires_login = config.get("davfs_users") is not None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if (
            self._requires_login
            and environ["REQUEST_METHOD"] == "OPTIONS"
            and "HTTP_AUTHORIZATION" not in environ
            and environ.get("CONTENT_LENGTH", "") in ("", "0")
            and "HTTP_TRANSFER_ENCODING" not in environ
        ):
            start_response(
                "200 OK",
                [
                    ("DAV", "1, 2"),
                    ("MS-Author-Via", "DAV"),
                    ("Allow", ", ".join(METHODS)),
                    ("Content-Length", "0"),
                    ("Date", get_rfc1123_time()),
                ],
            )
            return [b""]
        return super().__call__(environ, start_response)

    def handle_basic_auth_request(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        encoded = environ["HTTP_AUTHORIZATION"][len("Basic ") :].strip()
        try:
            decoded = binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True).decode("utf-8")
        except (ValueError, UnicodeError):
            decoded = ""
        if ":" not in decoded:
            return self.send_basic_auth_response(environ, start_response)
        return super().handle_basic_auth_request(environ, start_response)

    def handle_digest_auth_request(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            return super().handle_digest_auth_request(environ, start_response)
        except ValueError:  # a digest uri wsgidav cannot parse: a failed login, not a 500
            return self.send_digest_auth_response(environ, start_response)


class UnknownUserNames(logging.Filter):
    """Keeps failed-login warnings from quoting a user name nobody has: people type
    their password into the user field, and log files are read by others."""

    _FAILED = re.compile(r"failed for user (?P<name>'.*?'|\".*?\"), realm")

    def __init__(self, users: Mapping[str, User]) -> None:
        super().__init__()
        self._names = {repr(name) for name in users}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = self._FAILED.search(message)
        if match is not None and match["name"] not in self._names:
            record.msg = message.replace(match["name"], "(an unknown user name, not shown)")
            record.args = ()
        return True


def _refuse_writes_of_readers(next_app: WsgiApp) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        roles = environ.get("wsgidav.auth.roles") or ()
        if "reader" in roles and environ["REQUEST_METHOD"].upper() not in READ_METHODS:
            body = b"403 Forbidden: this user has read-only access\n"
            start_response(
                "403 Forbidden",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return next_app(environ, start_response)

    return app


def wsgidav_auth_config(users: Mapping[str, User] | None, *, tls: bool) -> dict[str, Any]:
    """The wsgidav settings that put :class:`DavfsUsers` in charge.

    Over plain HTTP the challenge is Digest (what Windows accepts there); over TLS it is
    Basic, which every client speaks. Both schemes are accepted either way: rclone and
    curl send Basic unasked."""
    return {
        "davfs_users": dict(users) if users is not None else None,
        "http_authenticator": {
            "domain_controller": DavfsUsers,
            "accept_basic": True,
            "accept_digest": True,
            "default_to_digest": not tls,
        },
    }
