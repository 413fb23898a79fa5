"""Configuration: ``wsgidav.yaml`` + ``DAVFS_*`` environment → one frozen DavfsConfig.

``wsgidav.yaml`` is the single config file. Its top level is wsgidav's own (host, port,
authentication, hotfixes…); our keys live in its ``davfs:`` section. Environment
variables ``DAVFS_<KEY>`` override both (``DAVFS_PORT``, ``DAVFS_DATA_DIR``…), and
``DAVFS_CONFIG`` names the file. Everything is validated here, once; a bad value raises
:class:`ConfigError` naming the key. No other module reads ``os.environ``.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from davfs.auth import User, parse_users
from davfs.errors import ConfigError
from davfs.stores.settings import TelegramSettings

MiB = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}


@dataclass(frozen=True)
class DavfsConfig:
    """Every setting davfs uses, validated. Field docs are the reference in the README."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    store: str = ""
    """Chunk store URL; default ``local:<data_dir>/store``."""
    catalog_url: str = ""
    """SQLAlchemy URL; default ``sqlite:///<data_dir>/catalog.sqlite``."""
    chunk_size: int = 20 * MiB
    """20 MiB on the local store, 64 MiB on Telegram (each chunk costs a message)."""
    prefetch_blocks: int = 8
    upload_in_flight: int = 2
    threads: int = 64
    socket_timeout: int = 300
    users: Mapping[str, User] = field(default_factory=dict, repr=False)
    """``davfs.users`` / ``DAVFS_USERS``; empty (and not anonymous): a user is generated."""
    anonymous: bool = False
    """No authentication at all; only on loopback unless allow_anonymous_remote."""
    allow_anonymous_remote: bool = False
    ssl_certificate: Path | None = None
    """With ssl_private_key: serve HTTPS (cheroot's TLS), where Basic auth is offered."""
    ssl_private_key: Path | None = None
    ssl_certificate_chain: Path | None = None
    manifest_interval: int = 30
    """Seconds between manifests (batches of catalog changes written to the store so the
    store alone can rebuild the catalog; on Telegram each costs one message)."""
    gc_interval: int = 6 * 3600
    """Seconds between the server's garbage collections (0: only ``davfs gc``)."""
    gc_grace: int = 24 * 3600
    """Seconds a replaced or deleted file's chunks are kept (downloads that started on
    the old content can finish; an upload may take this long)."""
    encryption: bool = False
    """New drives are encrypted (see :mod:`davfs.stores.sealed`); a drive that is
    encrypted stays so whatever this says."""
    passphrase: str | None = field(default=None, repr=False)
    """Opens the drive key; better given as ``DAVFS_PASSPHRASE`` than in a file. Without
    it, ``<data_dir>/passphrase`` (written by ``davfs login``) is used."""
    trash_days: int = 30
    """Days a deleted file or folder stays in the trash (``davfs trash``); 0: DELETE
    deletes at once (gc takes the chunks after ``gc_grace``)."""
    versions_keep: int = 10
    """Previous versions kept per overwritten file (``davfs versions``); 0 keeps none
    past ``gc_grace``."""
    version_days: int = 30
    """Days a previous version is kept (at most ``versions_keep`` of them per file)."""
    backup_interval: int = 24 * 3600
    """Seconds between the server's catalog backups into the store (0: only ``davfs backup``)."""
    backup_keep: int = 7
    """Backups kept in the store; older ones are deleted after each new one."""
    propfind_infinity: bool = False
    """Answer PROPFIND with Depth: infinity (a whole-tree walk; off: 403 as RFC 4918 allows)."""
    write_back: bool = True
    """Acknowledge an upload once it is durable on this machine and ship it to the store
    in the background (small files packed together); off: the store holds every byte
    before the answer."""
    staging_dir: Path = Path("data/staging")
    """Where write-back keeps what is not shipped yet; default ``<data_dir>/staging``."""
    staging_limit: int = 10 * 1024 * MiB
    """Staged bytes at most; past it uploads wait, then get 503 with Retry-After."""
    windows_names: bool = True
    """New names must be ones Windows can open (no trailing dot or space, no CON, NUL,
    COM1…, none of <>:"|?*) and tell apart from their siblings (not only case)."""
    telegram: TelegramSettings | None = None
    """Set when ``store: telegram``."""
    wsgidav: Mapping[str, Any] = field(default_factory=dict)
    """The rest of wsgidav.yaml, handed to WsgiDAVApp."""

    @property
    def tls(self) -> bool:
        return self.ssl_certificate is not None

    @property
    def url(self) -> str:
        """Where clients reach the server (a wildcard bind is shown as this machine's name)."""
        host = self.host
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = socket.gethostname()
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    @property
    def config_file(self) -> str | None:
        value = self.wsgidav.get("_config_file")
        return str(value) if value else None


_TOP_LEVEL_KEYS = ("host", "port", "ssl_certificate", "ssl_private_key", "ssl_certificate_chain")
"""wsgidav's own names for these, so they stay at the top of wsgidav.yaml."""
_DAVFS_KEYS = {f.name for f in fields(DavfsConfig)} - {"wsgidav", *_TOP_LEVEL_KEYS}
_ENV_KEYS = {f.name for f in fields(DavfsConfig)} - {"wsgidav", "telegram"}
_TELEGRAM_KEYS = {f.name for f in fields(TelegramSettings)}
TELEGRAM_CHUNK_SIZE = 64 * MiB


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> DavfsConfig:
    """Build the configuration from file, environment and explicit overrides (CLI)."""
    env = os.environ if environ is None else environ
    file_path = path or env.get("DAVFS_CONFIG")
    raw: dict[str, Any] = {}
    if file_path is None and Path("wsgidav.yaml").is_file():
        file_path = "wsgidav.yaml"
    if file_path is not None:
        raw = _read_yaml(Path(file_path))
        raw["_config_file"] = str(Path(file_path).resolve())
    davfs_section = raw.pop("davfs", None) or {}
    if not isinstance(davfs_section, dict):
        raise ConfigError("davfs", "must be a mapping of davfs settings")
    for key in davfs_section:
        if key not in _DAVFS_KEYS:
            raise ConfigError(f"davfs.{key}", f"unknown setting (known: {', '.join(sorted(_DAVFS_KEYS))})")

    values: dict[str, Any] = dict(davfs_section)
    telegram = dict(values.pop("telegram", None) or {})
    for key in _TELEGRAM_KEYS:
        env_value = env.get(f"DAVFS_TELEGRAM_{key.upper()}")
        if env_value is not None:
            telegram[key] = env_value
    values["telegram"] = telegram
    for key in _TOP_LEVEL_KEYS:
        if key in raw:
            values[key] = raw.pop(key)
    for key in _ENV_KEYS:
        env_value = env.get(f"DAVFS_{key.upper()}")
        if env_value is not None:
            values[key] = env_value
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return _validate(values, raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(f"{path}:{where}", "not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the top level must be a mapping")
    return data


def _validate(values: dict[str, Any], wsgidav_conf: dict[str, Any]) -> DavfsConfig:
    host = str(values.get("host", DavfsConfig.host))
    port = _integer("port", values.get("port", DavfsConfig.port), 0, 65535)
    data_dir = Path(str(values.get("data_dir", DavfsConfig.data_dir))).expanduser()
    store = str(values.get("store") or f"local:{data_dir / 'store'}")
    telegram = _telegram_settings(values.get("telegram") or {}) if store == "telegram" else None
    default_chunk = TELEGRAM_CHUNK_SIZE if telegram else DavfsConfig.chunk_size
    catalog_url = str(values.get("catalog_url") or f"sqlite:///{data_dir / 'catalog.sqlite'}")
    if "://" not in catalog_url:
        raise ConfigError("davfs.catalog_url", f"{catalog_url!r} is not a database URL")
    config = DavfsConfig(
        host=host,
        port=port,
        data_dir=data_dir,
        store=store,
        catalog_url=catalog_url,
        chunk_size=_size("chunk_size", values.get("chunk_size", default_chunk)),
        prefetch_blocks=_integer(
            "prefetch_blocks", values.get("prefetch_blocks", DavfsConfig.prefetch_blocks), 0, 256
        ),
        upload_in_flight=_integer(
            "upload_in_flight", values.get("upload_in_flight", DavfsConfig.upload_in_flight), 1, 16
        ),
        threads=_integer("threads", values.get("threads", DavfsConfig.threads), 4, 1024),
        socket_timeout=_integer(
            "socket_timeout", values.get("socket_timeout", DavfsConfig.socket_timeout), 10, 86400
        ),
        users=parse_users(values.get("users")),
        anonymous=_boolean("anonymous", values.get("anonymous", DavfsConfig.anonymous)),
        ssl_certificate=_readable_file("ssl_certificate", values.get("ssl_certificate")),
        ssl_private_key=_readable_file("ssl_private_key", values.get("ssl_private_key")),
        ssl_certificate_chain=_readable_file("ssl_certificate_chain", values.get("ssl_certificate_chain")),
        allow_anonymous_remote=_boolean(
            "allow_anonymous_remote", values.get("allow_anonymous_remote", DavfsConfig.allow_anonymous_remote)
        ),
        manifest_interval=_integer(
            "manifest_interval", values.get("manifest_interval", DavfsConfig.manifest_interval), 1, 86400
        ),
        gc_interval=_integer(
            "gc_interval", values.get("gc_interval", DavfsConfig.gc_interval), 0, 365 * 86400
        ),
        gc_grace=_integer("gc_grace", values.get("gc_grace", DavfsConfig.gc_grace), 0, 365 * 86400),
        encryption=_boolean("encryption", values.get("encryption", DavfsConfig.encryption)),
        passphrase=None if values.get("passphrase") in (None, "") else str(values.get("passphrase")),
        trash_days=_integer("trash_days", values.get("trash_days", DavfsConfig.trash_days), 0, 3650),
        versions_keep=_integer(
            "versions_keep", values.get("versions_keep", DavfsConfig.versions_keep), 0, 1000
        ),
        version_days=_integer("version_days", values.get("version_days", DavfsConfig.version_days), 0, 3650),
        backup_interval=_integer(
            "backup_interval", values.get("backup_interval", DavfsConfig.backup_interval), 0, 365 * 86400
        ),
        backup_keep=_integer("backup_keep", values.get("backup_keep", DavfsConfig.backup_keep), 1, 1000),
        propfind_infinity=_boolean(
            "propfind_infinity", values.get("propfind_infinity", DavfsConfig.propfind_infinity)
        ),
        windows_names=_boolean("windows_names", values.get("windows_names", DavfsConfig.windows_names)),
        write_back=_boolean("write_back", values.get("write_back", DavfsConfig.write_back)),
        staging_dir=Path(str(values.get("staging_dir") or data_dir / "staging")).expanduser(),
        staging_limit=_size("staging_limit", values.get("staging_limit", DavfsConfig.staging_limit)),
        telegram=telegram,
        wsgidav=copy.deepcopy(wsgidav_conf),
    )
    if config.chunk_size % MiB or not MiB <= config.chunk_size <= 2000 * MiB:
        raise ConfigError("davfs.chunk_size", "must be a whole number of MiB between 1 MiB and 2000 MiB")
    if (config.ssl_certificate is None) != (config.ssl_private_key is None):
        raise ConfigError("ssl_certificate", "TLS needs both ssl_certificate and ssl_private_key")
    if config.ssl_certificate_chain is not None and not config.tls:
        raise ConfigError("ssl_certificate_chain", "is only used with ssl_certificate and ssl_private_key")
    for key, replacement in (("simple_dc", "davfs.users"), ("http_authenticator", "davfs.users")):
        if key in wsgidav_conf:
            raise ConfigError(key, f"davfs manages users itself; list them under {replacement} (see README)")
    if config.write_back and catalog_url.startswith("postgresql") and not values.get("staging_dir"):
        raise ConfigError(
            "davfs.staging_dir",
            "with a PostgreSQL catalog (several instances) write-back needs a staging folder every "
            "instance mounts; set davfs.staging_dir to one, or set davfs.write_back: false",
        )
    if config.staging_limit < 64 * MiB:
        raise ConfigError("davfs.staging_limit", "must be at least 64MiB")
    if config.anonymous and config.users:
        raise ConfigError("davfs.anonymous", "is on, but users are configured too; choose one")
    if not is_loopback(config.host) and config.anonymous and not config.allow_anonymous_remote:
        raise ConfigError(
            "host",
            f"{config.host} is reachable from other machines but anonymous access is on; "
            "turn davfs.anonymous off (users under davfs.users, or the generated one), "
            "or set davfs.allow_anonymous_remote: true if you really mean it",
        )
    return config


def _telegram_settings(section: Mapping[str, Any]) -> TelegramSettings:
    if not isinstance(section, Mapping):
        raise ConfigError("davfs.telegram", "must be a mapping of Telegram settings")
    for key in section:
        if key not in _TELEGRAM_KEYS:
            raise ConfigError(
                f"davfs.telegram.{key}", f"unknown setting (known: {', '.join(sorted(_TELEGRAM_KEYS))})"
            )
    defaults = TelegramSettings()
    channel = str(section.get("channel", defaults.channel)).strip()
    api_hash = str(section.get("api_hash", "")).strip()
    if not channel:
        raise ConfigError("davfs.telegram.channel", "is empty; give a -100… id, @username, invite link or me")
    if api_hash and not re.fullmatch(r"[0-9a-f]{32}", api_hash):
        raise ConfigError("davfs.telegram.api_hash", "must be the 32 hex digits from my.telegram.org")
    return TelegramSettings(
        channel=channel,
        api_id=_integer("telegram.api_id", section.get("api_id", 0), 0, 2**31 - 1),
        api_hash=api_hash,
        parallelism=_integer("telegram.parallelism", section.get("parallelism", defaults.parallelism), 1, 64),
        flood_threshold=_integer(
            "telegram.flood_threshold", section.get("flood_threshold", defaults.flood_threshold), 0, 3600
        ),
        retries=_integer("telegram.retries", section.get("retries", defaults.retries), 0, 20),
        request_timeout=_integer(
            "telegram.request_timeout", section.get("request_timeout", defaults.request_timeout), 5, 3600
        ),
    )


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _key(name: str) -> str:
    return name if name in _TOP_LEVEL_KEYS else f"davfs.{name}"


def _readable_file(name: str, value: Any) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(_key(name), f"cannot read {path} ({exc.strerror})") from None
    return path


def _integer(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ConfigError(_key(name), f"{value!r} is not a whole number between {low} and {high}")
    return number


def _size(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(_key(name), f"{value!r} is not a size such as 20MiB or 67108864")
    unit = (match.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(match.group(1)) * _UNITS[unit]


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(_key(name), f"{value!r} is not true or false")
