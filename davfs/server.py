"""Build the WSGI app from a DavfsConfig and serve it with cheroot.

The path from here to a chunk: :func:`build_app` opens the :class:`~davfs.drive.Drive`
(catalog, store, background jobs), wraps it in a :class:`~davfs.provider.DavfsProvider`,
and hands that to wsgidav's ``WsgiDAVApp`` (auth, If-headers, locks, XML) with davfs's
own middleware (:mod:`davfs.http_policy`), behind :class:`~davfs.edge.Edge` (request
ids, access log, health endpoint). :func:`make_server` puts the app on a
cheroot server (:mod:`davfs.serving`) sized for long transfers: many worker threads (each
transfer holds one for its whole duration) and a socket timeout long enough for slow
clients, while connections that have not sent a whole request head hold none.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from wsgidav.default_conf import DEFAULT_CONFIG
from wsgidav.error_printer import ErrorPrinter
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.lock_man.lock_storage_redis import LockStorageRedis
from wsgidav.util import dynamic_instantiate_class_from_opts
from wsgidav.wsgidav_app import WsgiDAVApp

from davfs.auth import (
    DavfsAuthenticator,
    GeneratedUser,
    UnknownUserNames,
    User,
    generated_user,
    wsgidav_auth_config,
)
from davfs.config import DavfsConfig
from davfs.connect import first_user_banner
from davfs.drive import Drive
from davfs.edge import Edge
from davfs.errors import ConfigError
from davfs.http_policy import ClientMistakes, ErrorPages, RequestPolicy
from davfs.locks import DavfsLockManager, DavfsLockStorage
from davfs.provider import DavfsProvider
from davfs.serving import MAX_HEAD, DavfsServer, ShortHandshakeSSLAdapter
from davfs.stores.base import ChunkStore
from davfs.web import UndoPages

WSGI_IO_SIZE = 1024 * 1024
"""wsgidav's read/write size per call: its default of 8 KiB is the GET/PUT bottleneck.
Equal to the BlockHash block size, so a GET hands out whole verified blocks uncopied."""


_WSGIDAV_DEFAULTS: dict[str, Any] = {
    "verbose": 1,
    "logging": {"enable": False},
    "block_size": WSGI_IO_SIZE,
    # X-OC-Mtime goes into the upload's own commit (davfs.provider), not after it.
    "honor_mtime_header": False,
    "add_header_MS_Author_Via": True,
    "mutable_live_props": ["{DAV:}getlastmodified"],
    "hotfixes": {"emulate_win32_lastmod": True, "re_encode_path_info": True},
    # The browser listing, in davfs's own page (sizes in KiB/MiB, exact bytes on hover),
    # with file links that download instead of opening Word (ms-word:) or LibreOffice.
    "dir_browser": {
        "enable": True,
        "htdocs_path": str(Path(__file__).with_name("htdocs")),
        "ms_sharepoint_support": False,
        "libre_office_support": False,
    },
    "property_manager": None,
}


@dataclass
class App:
    """The WSGI application and what it owns, so tests and the CLI can close it."""

    wsgi: Edge
    """wsgidav's application behind davfs's edge (request ids, access log, health)."""
    drive: Drive
    locks: Any
    generated_user: GeneratedUser | None
    """Set when no users were configured and davfs made one up (printed at start)."""

    def close(self) -> None:
        self.locks.close()
        self.drive.close()


def build_app(config: DavfsConfig, *, store: ChunkStore | None = None) -> App:
    _return_large_buffers_to_the_os()
    drive = Drive(config, store=store)
    try:
        return _build_app(config, drive)
    except BaseException:
        drive.close()
        raise


def _build_app(config: DavfsConfig, drive: Drive) -> App:
    provider = DavfsProvider(drive, propfind_infinity=config.propfind_infinity)
    locks = _lock_storage(config, drive)
    generated = None
    users: dict[str, User] | None = None
    if not config.anonymous:
        users = dict(config.users)
        if not users:
            generated = generated_user(config.data_dir)
            users = {generated.name: generated.user}
    wsgidav_conf = _merge(
        copy.deepcopy(_WSGIDAV_DEFAULTS),
        wsgidav_auth_config(users, tls=config.tls, nonce_key=drive.catalog.db.secret("digest-nonce")),
    )
    _merge(wsgidav_conf, dict(config.wsgidav))
    wsgidav_conf["middleware_stack"] = _middleware(
        wsgidav_conf.get("middleware_stack", DEFAULT_CONFIG["middleware_stack"])
    )
    wsgidav_conf.update(
        host=config.host,
        port=config.port,
        provider_mapping={"/": provider},
        lock_storage=locks,
    )
    dav_app = WsgiDAVApp(wsgidav_conf)
    if isinstance(locks, DavfsLockStorage):
        dav_app.lock_manager = DavfsLockManager(locks)
        provider.set_lock_manager(dav_app.lock_manager)
    app = Edge(dav_app, drive)
    # With its own logging off, wsgidav's logger swallows everything, including the
    # tracebacks of internal errors; send its warnings and errors to ours.
    wsgidav_log = logging.getLogger("wsgidav")
    wsgidav_log.propagate = True
    wsgidav_log.setLevel(logging.WARNING)
    put_log = logging.getLogger("wsgidav.request_server")
    if not any(isinstance(f, ClientMistakes) for f in put_log.filters):
        put_log.addFilter(ClientMistakes())
    auth_log = logging.getLogger("wsgidav.http_authenticator")
    for old in [f for f in auth_log.filters if isinstance(f, UnknownUserNames)]:
        auth_log.removeFilter(old)
    auth_log.addFilter(UnknownUserNames(users or {}))
    drive.start_jobs()
    return App(app, drive, locks, generated)


def _middleware(stack: list[Any]) -> list[Any]:
    """wsgidav's middleware with davfs's layers: :class:`ErrorPages` in place of its
    ErrorPrinter, davfs's authenticator in place of its own, then the trash and
    versions pages (:mod:`davfs.web`) and the :class:`RequestPolicy`."""
    layers: list[Any] = []
    for layer in stack:
        if layer is ErrorPrinter:
            layers.append(ErrorPages)
        elif layer is HTTPAuthenticator:
            layers += [DavfsAuthenticator, UndoPages, RequestPolicy]
        else:
            layers.append(layer)
    return layers


def _lock_storage(config: DavfsConfig, drive: Drive) -> Any:
    """wsgidav's lock storage: the catalog by default (:mod:`davfs.locks`; shared by
    every instance on a PostgreSQL catalog), or what ``lock_storage`` in wsgidav.yaml
    names (``LockStorageRedis``). Checked here so a wrong class or an unreachable Redis
    is one line at start-up, not a failure on the first LOCK."""
    options = config.wsgidav.get("lock_storage")
    if not options:
        return DavfsLockStorage(drive.catalog.locks)
    try:
        storage = dynamic_instantiate_class_from_opts(options)
    except Exception as exc:  # noqa: BLE001 - wsgidav raises anything from import to TypeError
        raise ConfigError("lock_storage", f"cannot create it ({exc})") from None
    if isinstance(storage, LockStorageRedis):
        storage.open()
        try:
            storage._redis.ping()
        except RedisError as exc:
            raise ConfigError(
                "lock_storage", f"cannot reach Redis ({exc}); start it or fix its host/port"
            ) from None
        storage.close()
    return storage


def make_server(config: DavfsConfig, app: App) -> DavfsServer:
    server = DavfsServer(
        (config.host, config.port),
        app.wsgi,
        numthreads=config.threads,
        timeout=config.socket_timeout,
        request_queue_size=64,
        shutdown_timeout=5,
        server_name="davfs",
    )
    # cheroot reads request heads of any size before wsgidav (or authentication) runs.
    server.max_request_header_size = MAX_HEAD
    if config.ssl_certificate is not None and config.ssl_private_key is not None:
        try:
            server.ssl_adapter = ShortHandshakeSSLAdapter(
                str(config.ssl_certificate),
                str(config.ssl_private_key),
                str(config.ssl_certificate_chain) if config.ssl_certificate_chain else None,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError("ssl_certificate", f"cannot use this certificate and key ({exc})") from None
    return server


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_serving_on_signals(server: DavfsServer) -> None:
    """Once serving, SIGTERM and Ctrl-C ask the serving loop to end rather than raise
    KeyboardInterrupt wherever the main thread happens to be: raised inside cheroot's
    hand-off of a connection to its worker queue, it left a worker waiting for ever and
    the shutdown hung (about one SIGTERM in six). A second signal interrupts at once."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        server.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _return_large_buffers_to_the_os() -> None:
    """Keep glibc from hoarding chunk buffers (invariant 5).

    glibc raises its mmap threshold each time a large mmapped block is freed; after the
    first freed chunk buffer, later ones come from per-thread heaps that are rarely
    returned, and with many uploads on many threads RSS climbs by hundreds of MiB.
    Pinning the threshold keeps every allocation of 4 MiB and more in its own mapping,
    given back on free. Pinning it also freezes the trim threshold at 128 KiB, which
    would hand every freed 1 MiB block back to the kernel and fault it in again (about
    190,000 page faults per 512 MiB GET); a 16 MiB trim threshold keeps blocks on the
    heap, where they are reused. Two arenas instead of glibc's 16 (8 per core) stop
    each worker thread's arena from keeping its own idle blocks: with 16, RSS after
    three 512 MiB PUT+GET rounds was 125 MiB; with 2 it stays at 76 MiB, as fast.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_mmap_threshold, 4 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 16 * 1024 * 1024)
    libc.mallopt(m_arena_max, 2)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def serve(config: DavfsConfig) -> None:
    """Run until interrupted (Ctrl-C, or SIGTERM from systemd, docker or kill), then
    shut down in order: the last manifest is written, the store and catalog closed."""
    signal.signal(signal.SIGTERM, _interrupt)
    app = build_app(config)
    server = make_server(config, app)
    try:
        server.prepare()
        sealed = app.drive.key_id
        print(
            f"davfs: serving {config.url}  (data: {config.data_dir}, store: {config.store}, "
            + (f"encrypted with key {sealed})" if sealed else "not encrypted)"),
            flush=True,
        )
        if app.generated_user is not None:
            print(first_user_banner(config, app.generated_user), flush=True)
        _stop_serving_on_signals(server)
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        app.close()
