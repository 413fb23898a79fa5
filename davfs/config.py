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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from davfs.errors import ConfigError

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
    prefetch_blocks: int = 8
    upload_in_flight: int = 2
    threads: int = 64
    socket_timeout: int = 300
    allow_anonymous_remote: bool = False
    propfind_infinity: bool = False
    """Answer PROPFIND with Depth: infinity (a whole-tree walk; off: 403 as RFC 4918 allows)."""
    wsgidav: Mapping[str, Any] = field(default_factory=dict)
    """The rest of wsgidav.yaml, handed to WsgiDAVApp."""

    @property
    def anonymous(self) -> bool:
        """Whether the share is open without a password, judged on the user mapping
        the server will really use (``user_mapping`` replaces davfs's default whole)."""
        dc = (self.wsgidav.get("http_authenticator") or {}).get("domain_controller")
        if dc not in (None, "wsgidav.dc.simple_dc.SimpleDomainController"):
            return False
        mapping = self.user_mapping
        # wsgidav looks up the share's realm, then "*"; the root share's realm is "/" or "".
        return any(mapping.get(realm, mapping.get("*")) is True for realm in ("/", ""))

    @property
    def user_mapping(self) -> dict[str, Any]:
        simple_dc = self.wsgidav.get("simple_dc") or {}
        if "user_mapping" in simple_dc:
            return dict(simple_dc["user_mapping"] or {})
        return {"*": True}

    @property
    def config_file(self) -> str | None:
        value = self.wsgidav.get("_config_file")
        return str(value) if value else None


_DAVFS_KEYS = {f.name for f in fields(DavfsConfig)} - {"host", "port", "wsgidav"}
_ENV_KEYS = {f.name for f in fields(DavfsConfig)} - {"wsgidav"}


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
    for key in ("host", "port"):
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
    catalog_url = str(values.get("catalog_url") or f"sqlite:///{data_dir / 'catalog.sqlite'}")
    if "://" not in catalog_url:
        raise ConfigError("davfs.catalog_url", f"{catalog_url!r} is not a database URL")
    config = DavfsConfig(
        host=host,
        port=port,
        data_dir=data_dir,
        store=store,
        catalog_url=catalog_url,
        chunk_size=_size("chunk_size", values.get("chunk_size", DavfsConfig.chunk_size)),
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
        allow_anonymous_remote=_boolean(
            "allow_anonymous_remote", values.get("allow_anonymous_remote", DavfsConfig.allow_anonymous_remote)
        ),
        propfind_infinity=_boolean(
            "propfind_infinity", values.get("propfind_infinity", DavfsConfig.propfind_infinity)
        ),
        wsgidav=copy.deepcopy(wsgidav_conf),
    )
    if config.chunk_size % MiB or not MiB <= config.chunk_size <= 2000 * MiB:
        raise ConfigError("davfs.chunk_size", "must be a whole number of MiB between 1 MiB and 2000 MiB")
    for key in ("ssl_certificate", "ssl_private_key", "ssl_certificate_chain"):
        if wsgidav_conf.get(key):
            raise ConfigError(key, "TLS is not supported by davfs yet; put a TLS-terminating proxy in front")
    if not is_loopback(config.host) and config.anonymous and not config.allow_anonymous_remote:
        raise ConfigError(
            "host",
            f"{config.host} is reachable from other machines but anonymous access is on; "
            "configure users under simple_dc.user_mapping in wsgidav.yaml, "
            "or set davfs.allow_anonymous_remote: true if you really mean it",
        )
    return config


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _key(name: str) -> str:
    return name if name in ("host", "port") else f"davfs.{name}"


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
