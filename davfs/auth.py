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

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.util import get_rfc1123_time

from davfs.errors import ConfigError
from davfs.http_policy import METHODS

log = logging.getLogger(__name__)

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
    new: bool = False
    """Made by this start (its password is shown once, now); else read from ``path``."""

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
    user = GeneratedUser("davfs", secrets.token_urlsafe(12), path, new=True)
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


NONCE_LIFETIME = 300.0
"""Seconds a Digest nonce is good for; then the client is told ``stale=true`` and
retries with a fresh one without asking its user."""
MAX_NONCE_USES = 4096
"""Requests one nonce may authenticate (each with its own ``nc``)."""
_NC = re.compile(r"[0-9a-fA-F]{8}")


class DigestNonces:
    """Nonces the server can verify without remembering them (a MAC over the time they
    were issued, under a key every instance shares), and the ``nc`` values each one has
    been used with, so that a captured request cannot be replayed (RFC 7616 3.3-3.4).

    wsgidav issued random nonces and never looked at one again: a made-up nonce, one
    from 2001 and a replayed header were all accepted. The ``nc`` record is per
    instance: behind a load balancer a captured header could be replayed once on each
    other instance within :data:`NONCE_LIFETIME`; HTTPS prevents the capture."""

    def __init__(self, key: bytes, *, lifetime: float = NONCE_LIFETIME) -> None:
        self._key = key
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._used: dict[str, tuple[float, set[int]]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> DigestNonces:
        return self  # wsgidav copies its configuration; the record of uses stays one

    def issue(self) -> str:
        stamp = struct.pack(">d", time.time()) + secrets.token_bytes(8)
        return base64.urlsafe_b64encode(stamp + self._mac(stamp)).decode()

    def _mac(self, stamp: bytes) -> bytes:
        return hmac.new(self._key, stamp, hashlib.sha256).digest()[:16]

    def state(self, nonce: str) -> str:
        """``fresh``, ``stale`` (ours, but too old) or ``invalid``."""
        if len(nonce) != 44:
            return "invalid"
        try:
            raw = base64.urlsafe_b64decode(nonce.encode())
        except (ValueError, binascii.Error):
            return "invalid"
        stamp, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(stamp)):
            return "invalid"
        age = time.time() - struct.unpack(">d", stamp[:8])[0]
        return "fresh" if -5 <= age <= self._lifetime else "stale"

    def use(self, nonce: str, nc: str) -> bool:
        """Record one use of a fresh nonce; False for a count seen before (a replay),
        a malformed one, or a nonce used too often."""
        if not _NC.fullmatch(nc):
            return False
        count = int(nc, 16)
        now = time.time()
        with self._lock:
            if len(self._used) > 100_000:
                self._forget(now)
            issued, seen = self._used.setdefault(nonce, (now, set()))
            if count in seen or len(seen) >= MAX_NONCE_USES:
                return False
            seen.add(count)
        return True

    def _forget(self, now: float) -> None:
        for nonce, (first, _) in list(self._used.items()):
            if now - first > self._lifetime + 10:
                del self._used[nonce]


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
        # An unknown name costs the same hash and comparison as a wrong password, so
        # the answer's timing does not tell which names exist.
        user = (self.users or {}).get(user_name) or _NOBODY
        matches = user.password_matches(password)
        if user is _NOBODY or not matches:
            return False
        _set_roles(environ, user)
        return True

    def supports_http_digest_auth(self) -> bool:
        return True

    def digest_auth_user(self, realm: str, user_name: str, environ: dict[str, Any]) -> str | bool:
        user = (self.users or {}).get(user_name)
        if user is None or realm != REALM:
            return _NOBODY.ha1  # the digest is computed and fails, as for a wrong password
        _set_roles(environ, user)
        return user.ha1


_NOBODY = User("\x00nobody", secrets.token_hex(16))
"""Stands in for a user name nobody has; its hash is random, so nothing matches it."""


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
        super().__init__(wsgidav_app, self._after_login(_refuse_writes_of_readers(next_app)), config)
        self._requires_login = config.get("davfs_users") is not None
        self._nonces: DigestNonces = config["davfs_nonces"]

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

    def send_digest_auth_response(
        self, environ: dict[str, Any], start_response: Callable[..., Any], *, stale: bool = False
    ) -> Any:
        """The Digest challenge, with a nonce of :class:`DigestNonces`."""
        body = b"401 Unauthorized: log in\n"
        challenge = f'Digest realm="{REALM}", nonce="{self._nonces.issue()}", algorithm=MD5, qop="auth"'
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", challenge + (", stale=true" if stale else "")),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Date", get_rfc1123_time()),
            ],
        )
        return [body]

    def handle_digest_auth_request(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """wsgidav checks the digest itself; before that, the nonce must be one of ours
        and ``qop=auth`` (so an ``nc`` comes along); after it, see :meth:`_after_login`."""
        fields = _digest_fields(environ["HTTP_AUTHORIZATION"])
        nonce, state = fields.get("nonce", ""), "invalid"
        if fields.get("qop", "").lower() == "auth" and _NC.fullmatch(fields.get("nc", "")):
            state = self._nonces.state(nonce)
        if state == "invalid":
            log.info("digest login refused: a nonce this server did not issue, or no qop=auth")
            return self.send_digest_auth_response(environ, start_response)
        environ["davfs.auth.digest"] = (nonce, fields["nc"], state)
        try:
            return super().handle_digest_auth_request(environ, start_response)
        except ValueError:  # a digest uri wsgidav cannot parse: a failed login, not a 500
            return self.send_digest_auth_response(environ, start_response)

    def _after_login(self, next_app: WsgiApp) -> WsgiApp:
        """Runs once wsgidav accepted the credentials: a Digest login whose nonce is
        stale is asked to retry with a fresh one; one whose ``nc`` was seen before is a
        replay and refused."""

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            digest = environ.pop("davfs.auth.digest", None)
            if digest is not None:
                nonce, nc, state = digest
                if state == "stale":
                    return cast(
                        Iterable[bytes], self.send_digest_auth_response(environ, start_response, stale=True)
                    )
                if not self._nonces.use(nonce, nc):
                    log.warning("digest login refused: nonce count %s was used before (a replay?)", nc[:8])
                    return cast(Iterable[bytes], self.send_digest_auth_response(environ, start_response))
            return next_app(environ, start_response)

        return app


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


def _digest_fields(header: str) -> dict[str, str]:
    """The key=value pairs of a Digest Authorization header (values unquoted)."""
    fields = {}
    for key, quoted, bare in _DIGEST_FIELD.findall(header[len("Digest") :]):
        fields[key.lower()] = quoted if quoted else bare
    return fields


_DIGEST_FIELD = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def wsgidav_auth_config(users: Mapping[str, User] | None, *, tls: bool, nonce_key: bytes) -> dict[str, Any]:
    """The wsgidav settings that put :class:`DavfsUsers` in charge.

    Over plain HTTP the challenge is Digest (what Windows accepts there); over TLS it is
    Basic, which every client speaks. Both schemes are accepted either way: rclone and
    curl send Basic unasked."""
    return {
        "davfs_users": dict(users) if users is not None else None,
        "davfs_nonces": DigestNonces(nonce_key),
        "http_authenticator": {
            "domain_controller": DavfsUsers,
            "accept_basic": True,
            "accept_digest": True,
            "default_to_digest": not tls,
        },
    }
