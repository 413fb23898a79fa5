"""``davfs`` command line: serve, login, fsck, recover, and ls/put/get straight on the catalog and store.

Every command opens the same :class:`~davfs.drive.Drive` the server does, so ``ls``,
``put`` and ``get`` read, verify and commit exactly as the server does, without a
running server. Errors print one line and exit with the error's ``exit_code`` (one per
error class, see :mod:`davfs.errors`); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from tqdm import tqdm

from davfs.catalog import Catalog
from davfs.config import DavfsConfig, load_config
from davfs.drive import Drive
from davfs.errors import CatalogError, DavfsError
from davfs.fsck import fsck
from davfs.manifest import recover
from davfs.paths import split_path

if TYPE_CHECKING:
    from davfs.stores.settings import TelegramSettings

_COPY_BLOCK = 1024 * 1024
OS_ERROR = 74
"""Exit code of an operating-system error (a busy port, an unreadable file): EX_IOERR."""


def main(argv: Sequence[str] | None = None) -> int:
    # The data folder holds file names, properties, the oplog and logins: nothing davfs
    # creates there is readable by other local users.
    os.umask(0o077)
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(
            args.config,
            overrides={
                "host": getattr(args, "host", None),
                "port": getattr(args, "port", None),
                "data_dir": args.data_dir,
            },
        )
        result: int = args.func(config, args)
        return result
    except DavfsError as exc:
        print(f"davfs: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # port in use, data folder not writable, disk full…
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"davfs: {exc.strerror or exc}{where}", file=sys.stderr)
        return OS_ERROR
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="davfs", description="WebDAV drive backed by verified chunks.")
    parser.add_argument("-c", "--config", help="config file (default: $DAVFS_CONFIG or ./wsgidav.yaml)")
    parser.add_argument("-d", "--data-dir", help="data folder (default from config: ./data)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the WebDAV server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.set_defaults(func=_serve)

    login = commands.add_parser("login", help="sign a Telegram account or bot in for the Telegram store")
    login.add_argument("--phone", help="user account phone number, international format (asked if omitted)")
    login.add_argument(
        "--bot-token",
        help="sign a bot in instead (or set DAVFS_TELEGRAM_BOT_TOKEN); the bot must administer the channel",
    )
    login.add_argument(
        "--no-encryption",
        action="store_true",
        help="do not encrypt a new drive (by default its chunks are encrypted, "
        "and a recovery passphrase is printed once)",
    )
    login.set_defaults(func=_login)

    check = commands.add_parser("fsck", help="check that every file is whole (exit 0: clean, 1: problems)")
    check.add_argument(
        "--verify",
        action="store_true",
        help="also read back and re-hash every block of every file in the store "
        "(an interrupted run continues where it stopped)",
    )
    check.add_argument(
        "--from-start", action="store_true", help="verify everything again, not from a checkpoint"
    )
    check.add_argument(
        "--rate", type=float, help="verify at most this many MB per second (e.g. for Telegram)"
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="(implies --verify) use another intact copy of a broken chunk if the store has one, "
        "else mark it damaged so its files fail clearly when read",
    )
    check.set_defaults(func=_fsck)

    gc = commands.add_parser(
        "gc", help="delete stored chunks no file needs any more (safe while the server runs)"
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    gc.add_argument(
        "--grace",
        type=float,
        help="keep chunks of files replaced or deleted less than this many seconds ago "
        "(default: davfs.gc_grace)",
    )
    gc.set_defaults(func=_gc)

    backup = commands.add_parser("backup", help="back the catalog up into the store now")
    backup.add_argument("--list", action="store_true", help="list the backups in the store instead")
    backup.set_defaults(func=_backup)

    restore = commands.add_parser("restore", help="restore the catalog from a backup in the store")
    restore.add_argument("backup", nargs="?", default="latest", help="a backup from --list (default: latest)")
    restore.add_argument(
        "--force",
        action="store_true",
        help="replace an existing catalog (a SQLite file is set aside, not deleted)",
    )
    restore.set_defaults(func=_restore)

    recover = commands.add_parser(
        "recover", help="rebuild a lost catalog from the store's chunks and manifests"
    )
    recover.add_argument(
        "--force",
        action="store_true",
        help="set an existing SQLite catalog aside (renamed, not deleted) first",
    )
    recover.set_defaults(func=_recover)

    status = commands.add_parser(
        "status", help="what the drive holds and what waits on this machine to be shipped"
    )
    status.add_argument("--json", action="store_true", help="print the health endpoint's JSON instead")
    status.set_defaults(func=_status)

    ship = commands.add_parser(
        "ship",
        help="ship everything staged on this machine into the store now "
        "(before retiring the machine; exit 1 if something could not be shipped)",
    )
    ship.add_argument(
        "--timeout", type=float, default=3600.0, help="give up after this many seconds (default 3600)"
    )
    ship.set_defaults(func=_ship)

    passphrase = commands.add_parser(
        "passphrase",
        help="change the passphrase of an encrypted drive (asked, or DAVFS_NEW_PASSPHRASE); "
        "the old one stops opening it",
    )
    passphrase.set_defaults(func=_change_passphrase)

    hash_password = commands.add_parser(
        "hash-password", help="print a password_hash for davfs.users (the password is asked)"
    )
    hash_password.add_argument("user")
    hash_password.set_defaults(func=_hash_password)

    windows = commands.add_parser(
        "windows-setup", help="print the Windows steps for this server and write a .reg file"
    )
    windows.add_argument(
        "--reg", type=Path, default=Path("davfs-windows.reg"), help="where to write the registry file"
    )
    windows.set_defaults(func=_windows_setup)

    trash = commands.add_parser("trash", help="what DELETE took away: list it, bring it back, empty it")
    trash_commands = trash.add_subparsers(dest="trash_command", required=True, metavar="list|restore|empty")
    trash_list = trash_commands.add_parser("list", help="list the trash (what was under PATH)")
    trash_list.add_argument("path", nargs="?", default="/")
    trash_list.set_defaults(func=_trash_list)
    trash_restore = trash_commands.add_parser(
        "restore", help="put back what was at PATH (the newest such item); never over an existing name"
    )
    trash_restore.add_argument("path")
    trash_restore.add_argument("--to", help="put it here instead of where it was")
    trash_restore.set_defaults(func=_trash_restore)
    trash_empty = trash_commands.add_parser("empty", help="delete what is in the trash for good")
    trash_empty.add_argument(
        "--older-than", type=float, metavar="DAYS", help="only what went in more than DAYS days ago"
    )
    trash_empty.set_defaults(func=_trash_empty)

    importing = commands.add_parser(
        "import", help="take in files already in Telegram, without uploading them"
    )
    import_sources = importing.add_subparsers(dest="import_source", required=True, metavar="app-db|channel")
    app_db = import_sources.add_parser(
        "app-db", help="the files the original upload app recorded in its SQLite database"
    )
    app_db.add_argument("database", type=Path)
    app_db.add_argument("--into", default="/Imported", help="drive folder to put them in (default /Imported)")
    app_db.add_argument("--dry-run", action="store_true", help="fetch and check every chunk, create nothing")
    app_db.set_defaults(func=_import_app_db)
    channel = import_sources.add_parser(
        "channel", help="documents in the drive's channel that davfs did not post (run app-db first)"
    )
    channel.add_argument(
        "--into", default="/From the channel", help="drive folder to put them in (default /From the channel)"
    )
    channel.add_argument(
        "--dry-run", action="store_true", help="fetch and check every document, create nothing"
    )
    channel.set_defaults(func=_import_channel)

    versions = commands.add_parser(
        "versions",
        help="list a file's previous versions ('versions PATH'), or make one current again "
        "('versions restore PATH N')",
    )
    versions.add_argument("words", nargs="+", metavar="PATH | restore PATH N")
    versions.set_defaults(func=_versions)

    ls = commands.add_parser("ls", help="list a folder")
    ls.add_argument("path", nargs="?", default="/")
    ls.set_defaults(func=_ls)

    put = commands.add_parser("put", help="store a local file at a drive path")
    put.add_argument("source", type=Path)
    put.add_argument("dest", help="drive path, e.g. /docs/report.pdf or /docs/")
    put.set_defaults(func=_put)

    get = commands.add_parser("get", help="copy a drive file to a local file ('-' for stdout)")
    get.add_argument("source")
    get.add_argument("dest")
    get.set_defaults(func=_get)
    return parser


def _serve(config: DavfsConfig, _args: argparse.Namespace) -> int:
    from davfs.server import serve

    serve(config)
    return 0


def _login(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.stores.settings import TelegramSettings
    from davfs.stores.telegram_accounts import LoginPrompts, login

    settings = config.telegram or TelegramSettings()
    if config.telegram is None:
        print(
            "davfs: note: davfs.store is not 'telegram' yet; using the davfs.telegram defaults",
            file=sys.stderr,
        )
    token = args.bot_token or os.environ.get("DAVFS_TELEGRAM_BOT_TOKEN")
    prompts = LoginPrompts(
        phone=lambda: args.phone or input("Phone number (international format, e.g. +4915…): "),
        code=lambda: input("Login code Telegram sent you: "),
        password=lambda: getpass.getpass("Two-step verification password: "),
    )
    saved = login(settings, config.data_dir, bot_token=token, prompts=prompts)
    print(f"signed in as {saved.path.stem}; it can post, read back and delete in {settings.channel}")
    print(f"session saved to {saved.path} (mode 0600; it is a login, keep it private)")
    print("put this in wsgidav.yaml (or set DAVFS_TELEGRAM_API_ID / DAVFS_TELEGRAM_API_HASH):")
    print("davfs:\n  store: telegram\n  telegram:")
    print(f"    channel: {settings.channel!r}\n    api_id: {settings.api_id}\n    api_hash: <your api_hash>")
    if not args.no_encryption:
        _set_up_encryption(config, settings)
    return 0


def _set_up_encryption(config: DavfsConfig, settings: TelegramSettings) -> None:
    """Encrypt a new drive: make its key, keep it wrapped here and in the channel, and
    print the passphrase that opens it on another machine, once."""
    from davfs.crypto import DriveKey, wrap
    from davfs.stores import open_store
    from davfs.stores.sealed import KEY_FILE, keep_passphrase, key_record, publish_key

    if (config.data_dir / KEY_FILE).is_file():
        print("encryption: this drive's key is already here")
        return
    catalog = Catalog(config.catalog_url)
    try:
        new_drive = catalog.dump.is_new() and catalog.db.setting("encryption") is None
    finally:
        catalog.close()
    if not new_drive:
        print("encryption: not set up (this drive already holds files; encryption is chosen for a new drive)")
        return
    store = open_store("telegram", telegram=settings, data_dir=config.data_dir)
    try:
        try:
            found = key_record(store, config.data_dir)
            others = found is None and any(True for _ in store.iter_chunks())
        except DavfsError:  # a bot cannot look through the channel
            found, others = None, False
        if found is not None:
            print("encryption: the channel holds an encrypted drive; give its passphrase in DAVFS_PASSPHRASE")
            return
        if others:
            print("encryption: not set up (the channel already holds an unencrypted drive's chunks)")
            return
        passphrase = "-".join(secrets.token_hex(3) for _ in range(6))
        publish_key(store, config.data_dir, wrap(DriveKey.new(), passphrase))
        keep_passphrase(config.data_dir, passphrase)
    finally:
        store.close()
    print("encryption: on. The channel will hold nothing readable. Your recovery passphrase:")
    print(f"\n    {passphrase}\n")
    print("Write it down now: it is shown once. This machine keeps it in the data folder; on")
    print("another machine (or after losing this one) give it in DAVFS_PASSPHRASE to open the drive.")


def _change_passphrase(config: DavfsConfig, _args: argparse.Namespace) -> int:
    from davfs.stores import open_store
    from davfs.stores.sealed import change_passphrase, stored_passphrase

    old = config.passphrase or stored_passphrase(config.data_dir)
    if not old:
        print("davfs: give the current passphrase in DAVFS_PASSPHRASE", file=sys.stderr)
        return 2
    new = os.environ.get("DAVFS_NEW_PASSPHRASE") or getpass.getpass("New passphrase: ")
    if "DAVFS_NEW_PASSPHRASE" not in os.environ and new != getpass.getpass("Again: "):
        print("davfs: the passphrases differ; nothing changed", file=sys.stderr)
        return 1
    if len(new) < 12:
        print("davfs: a passphrase needs at least 12 characters; nothing changed", file=sys.stderr)
        return 1
    store = open_store(config.store, telegram=config.telegram, data_dir=config.data_dir)
    try:
        removed = change_passphrase(store, config.data_dir, old, new)
    finally:
        store.close()
    if removed is None:
        print(
            "the drive key is wrapped under the new passphrase here and in the store; the store "
            "cannot be listed with this session, so copies under the old passphrase stay there: "
            "delete the older davfs key messages by hand"
        )
        return 1
    print(f"the drive key is wrapped under the new passphrase ({removed} copies under the old one deleted)")
    return 0


def _hash_password(_config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.auth import parse_users, password_hash

    parse_users({args.user: "x"})  # refuses names that cannot log in
    password = getpass.getpass(f"Password for {args.user}: ")
    if not password or password != getpass.getpass("Again: "):
        print("davfs: the passwords are empty or differ; nothing printed", file=sys.stderr)
        return 1
    print(f"davfs:\n  users:\n    {args.user}:\n      password_hash: {password_hash(args.user, password)}")
    return 0


def _windows_setup(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.auth import GENERATED_USER_FILE
    from davfs.connect import windows_registry_file, windows_setup_text

    args.reg.write_bytes(
        b"\xff\xfe" + windows_registry_file(config).encode("utf-16-le")
    )  # regedit: UTF-16LE + BOM
    user = next(iter(config.users), None)
    if user is None and not config.anonymous and (config.data_dir / GENERATED_USER_FILE).is_file():
        from davfs.auth import generated_user

        user = generated_user(config.data_dir).name
    print(windows_setup_text(config, str(args.reg), user or "USER"))
    return 0


def _fsck(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.fsck import Checkpoint, repair

    verify = args.verify or args.repair
    checkpoint = Checkpoint(config.data_dir / "fsck-verify.json")
    if verify and not args.from_start:
        checkpoint = Checkpoint.load(checkpoint.path)
    with Drive(config) as drive:
        total = drive.catalog.tree.used_bytes() if verify else 0
        with _progress(total, "verify", quiet=not verify) as bar:
            if checkpoint.bytes_verified:
                bar.update(checkpoint.bytes_verified)
            report = fsck(
                drive.catalog,
                drive.store,
                verify=verify,
                progress=bar.update,
                checkpoint=checkpoint if verify else None,
                rate=args.rate * 1e6 if args.rate else None,
            )
        if args.repair:
            repair(drive.catalog, drive.store, report)
    if report.resumed_after:
        print(
            f"continued an interrupted verification after chunk {report.resumed_after[:16]}", file=sys.stderr
        )
    for line in report.lines():
        print(line)
    verified = (
        f", {report.chunks_verified} chunks ({report.bytes_verified} bytes) re-hashed" if verify else ""
    )
    print(f"{'clean' if report.clean else 'PROBLEMS FOUND'}{verified}", file=sys.stderr)
    return 0 if report.clean else 1


def _gc(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.gc import collect_garbage

    grace = config.gc_grace if args.grace is None else args.grace
    with Drive(config) as drive:
        with _progress(0, "gc", quiet=args.dry_run) as bar:
            report = collect_garbage(
                drive.catalog,
                drive.store,
                grace=grace,
                retention=drive.retention,
                dry_run=args.dry_run,
                progress=bar.update,
            )
    for line in report.lines():
        print(line)
    return 1 if report.failed or report.busy else 0


def _backup(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.backup import backup_catalog, list_backups

    with Drive(config) as drive:
        if args.list:
            for backup in list_backups(drive.backing_store):
                print(backup.label)
            return 0
        made = backup_catalog(drive.catalog, drive.backing_store, part_size=config.chunk_size)
    print(f"backed up: {made.label}")
    return 0


def _restore(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.backup import find_backup, restore_catalog, settle_staged
    from davfs.manifest import last_logged_seq

    replace = _clear_the_way(config, force=args.force, command="restore")
    with Drive(config) as drive:
        backup = find_backup(drive.backing_store, args.backup)
        rows = restore_catalog(drive.catalog, drive.backing_store, backup, replace=replace)
        lost = settle_staged(drive.catalog, drive.backing_store, drive.staging)
        in_backup, in_store = drive.catalog.oplog.last_seq(), last_logged_seq(drive.backing_store)
        drive.catalog.oplog.continue_after(max(in_backup, in_store))
    print(f"restored {rows} rows from {backup.label}")
    if lost:
        print(
            f"davfs: {lost} chunks were staged for shipping when the backup was made and are neither "
            "in the store nor staged here; `davfs fsck` names the files that used them",
            file=sys.stderr,
        )
    if in_store > in_backup:
        print(
            f"the store's manifests hold {in_store - in_backup} changes newer than this backup; "
            "`davfs recover --force` rebuilds the newest state from them",
            file=sys.stderr,
        )
    return 0


def _status(config: DavfsConfig, args: argparse.Namespace) -> int:
    with Drive(config) as drive:
        state = drive.health()
        used, available = drive.quota()
        previous = drive.catalog.history.kept_bytes()
        trashed = drive.catalog.trash.held_bytes()
        key_id = drive.key_id
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    catalog = make_url(config.catalog_url).render_as_string(hide_password=True)
    print(f"catalog:  {catalog} (schema {state['catalog_schema']})")
    print(f"store:    {config.store}")
    print(
        f"encryption: on (key {key_id}); the store holds nothing readable"
        if key_id
        else "encryption: off (the store holds the files' bytes as they are)"
    )
    print(
        f"files:    {_size((used or 0) - previous - trashed)} stored"
        + ("" if available is None else f", {_size(available)} free")
    )
    print(
        f"versions: {_size(previous)} in previous versions of files "
        f"(the newest {config.versions_keep} per file, for {config.version_days} days)"
    )
    print(f"trash:    {_size(trashed)} (kept {config.trash_days} days; davfs trash list)")
    waiting = state.get("write_back")
    if waiting is None:
        print("shipping: write_back is off; uploads go straight to the store")
        return 0
    if not waiting["pending_files"]:
        print("shipping: nothing waits; the store holds every file")
    else:
        print(
            f"shipping: {waiting['pending_files']} files ({_size(waiting['pending_bytes'])}) wait "
            f"on this machine in {config.staging_dir}, the oldest for {waiting['oldest_seconds']:.0f} s"
        )
    if waiting["last_store_error"]:
        print(f"last store error: {waiting['last_store_error']}")
    return 0


def _ship(config: DavfsConfig, args: argparse.Namespace) -> int:
    with Drive(config) as drive:
        before = drive.catalog.staging.pending()
        left = drive.ship_all(timeout=args.timeout)
        error, _ = drive.catalog.staging.trouble() or (None, None)
    if left:
        print(f"davfs: {left} chunks are still staged: {error or 'time is up'}", file=sys.stderr)
        return 1
    print(f"shipped {before.chunks} chunks ({_size(before.bytes)}); the store holds every file")
    return 0


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _clear_the_way(config: DavfsConfig, *, force: bool, command: str) -> bool:
    """Before writing a whole catalog: an existing non-empty one is refused without
    ``--force``; with it, a SQLite file is set aside (renamed, not deleted). Returns
    whether a non-empty catalog in another database must be replaced in place."""
    catalog = Catalog(config.catalog_url)
    empty = catalog.tree.is_empty()
    catalog.close()
    if empty:
        return False
    if not force:
        raise CatalogError(f"the catalog already holds files; `davfs {command} --force` replaces it")
    database = _sqlite_file(config.catalog_url)
    if database is None:
        return True
    aside = database.with_name(f"{database.name}.before-{command}-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{database}{suffix}")
        if part.exists():
            os.replace(part, Path(f"{aside}{suffix}"))
    print(f"set the old catalog aside as {aside}", file=sys.stderr)
    return False


def _recover(config: DavfsConfig, args: argparse.Namespace) -> int:
    if _clear_the_way(config, force=args.force, command="recover"):
        raise CatalogError("recover writes into an empty database; empty it or point catalog_url elsewhere")
    with Drive(config) as drive:
        if not drive.catalog.tree.is_empty():
            raise CatalogError("the catalog database is not empty; point catalog_url at an empty database")
        with tqdm(
            desc="reading the store", unit=" chunks", file=sys.stderr, disable=not sys.stderr.isatty()
        ) as bar:
            report = recover(drive.catalog, drive.backing_store, progress=bar.update)
    print(
        f"recovered {report.files} files and {report.folders} folders from {report.manifests} manifests "
        f"({report.entries} changes) over {report.chunks} chunks"
    )
    for problem in report.problems:
        print(f"davfs: {problem}", file=sys.stderr)
    return 1 if report.problems else 0


def _sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite catalog URL (None for other engines or memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _trash_list(config: DavfsConfig, args: argparse.Namespace) -> int:
    with Drive(config) as drive:
        items = drive.trash_items(args.path)
    for item in items:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.deleted_at))
        what = f"folder, {item.files} files" if item.is_dir else "file"
        print(f"{stamp}  {item.size:>14}  {item.path}{'/' if item.is_dir else ''}  ({what})")
    if not items:
        print(f"the trash holds nothing from {args.path}", file=sys.stderr)
    return 0


def _trash_restore(config: DavfsConfig, args: argparse.Namespace) -> int:
    with Drive(config) as drive:
        item, at = drive.restore_from_trash(args.path, args.to)
    wanted = args.to or item.path
    if at != "/" + "/".join(split_path(wanted)):
        print(f"restored {item.path} as {at} ({wanted} is taken)")
    else:
        print(f"restored {at}")
    return 0


def _trash_empty(config: DavfsConfig, args: argparse.Namespace) -> int:
    if args.older_than is not None and not args.older_than >= 0:
        print("davfs trash empty: --older-than takes a number of days, 0 or more", file=sys.stderr)
        return 2
    with Drive(config) as drive:
        emptied = drive.empty_trash(args.older_than)
    print(f"deleted {emptied} items from the trash for good (gc frees their space)")
    return 0


def _import_app_db(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.importer import import_app_db

    with Drive(config) as drive:
        with _progress(None, "import") as bar:
            report = import_app_db(
                drive, args.database, into=args.into, dry_run=args.dry_run, progress=bar.update
            )
    for line in report.lines():
        print(line)
    return 1 if report.skipped else 0


def _import_channel(config: DavfsConfig, args: argparse.Namespace) -> int:
    from davfs.importer import import_channel

    with Drive(config) as drive:
        with _progress(None, "import") as bar:
            report = import_channel(drive, into=args.into, dry_run=args.dry_run, progress=bar.update)
    for line in report.lines():
        print(line)
    return 1 if report.skipped else 0


def _versions(config: DavfsConfig, args: argparse.Namespace) -> int:
    words: list[str] = args.words
    restoring = words[0] == "restore" and len(words) == 3
    if not restoring and len(words) != 1:
        print("davfs versions: give PATH, or restore PATH N", file=sys.stderr)
        return 2  # as argparse does for a bad command line
    if restoring and not words[2].isdigit():
        print(f"davfs versions restore: N must be a version number, not {words[2]!r}", file=sys.stderr)
        return 2  # as argparse does for a bad command line
    with Drive(config) as drive:
        if restoring:
            path, number = words[1], int(words[2])
            chosen = drive.restore_version(path, number)
            print(
                f"{path}: version {number} ({_size(chosen.size)}) is current again; what it replaced is kept"
            )
            return 0
        kept = drive.versions(words[0])
        for version in kept:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(version.written))
            state = (
                "current"
                if version.replaced is None
                else "replaced " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(version.replaced))
            )
            print(f"{version.number:>4} {version.size:>14} {stamp}  {state}")
    return 0


def _ls(config: DavfsConfig, args: argparse.Namespace) -> int:
    with Drive(config) as drive:
        node = drive.node(args.path)
        for member in drive.children(node.id) if node.is_dir else [node]:
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(member.modified))
            kind = "d" if member.is_dir else "-"
            name = member.name + ("/" if member.is_dir else "")
            print(f"{kind} {member.size:>14} {stamp}  {name}")
    return 0


def _put(config: DavfsConfig, args: argparse.Namespace) -> int:
    source: Path = args.source
    try:
        handle = source.open("rb")
        stat = os.fstat(handle.fileno())
    except OSError as exc:
        print(f"davfs: cannot read {source}: {exc.strerror}", file=sys.stderr)
        return OS_ERROR
    dest = args.dest.rstrip("/") + f"/{source.name}" if args.dest.endswith("/") else args.dest
    with handle, Drive(config) as drive:
        parent, name = drive.parent_of(dest)
        writer = drive.open_write(parent.id, name, path=dest, size=stat.st_size, mtime=stat.st_mtime)
        try:
            with _progress(stat.st_size, f"put {source.name}") as bar:
                while block := handle.read(_COPY_BLOCK):
                    writer.write(block)
                    bar.update(len(block))
            writer.close()
        except BaseException:
            writer.abort()
            raise
    print(f"stored {dest} ({stat.st_size} bytes)", file=sys.stderr)
    return 0


def _get(config: DavfsConfig, args: argparse.Namespace) -> int:
    to_stdout = args.dest == "-"
    with Drive(config) as drive, drive.open_read(args.source) as reader:
        snapshot = reader.snapshot
        target = Path(args.dest)
        if not to_stdout and target.is_dir():
            target = target / snapshot.path.rstrip("/").rsplit("/", 1)[-1]
        partial = target.with_name(target.name + ".davfs-part")
        out = sys.stdout.buffer if to_stdout else partial.open("wb")
        try:
            with _progress(snapshot.size, f"get {target.name}", quiet=to_stdout) as bar:
                while block := reader.read(_COPY_BLOCK):
                    out.write(block)
                    bar.update(len(block))
        except BaseException:
            if not to_stdout:
                out.close()
                partial.unlink(missing_ok=True)
            raise
        if not to_stdout:
            out.close()
            os.replace(partial, target)
            os.utime(target, (snapshot.mtime, snapshot.mtime))
    return 0


def _progress(total: int | None, label: str, *, quiet: bool = False) -> tqdm:
    """A progress bar on stderr for transfers long enough to want one (``None``: of a
    size not known in advance)."""
    return tqdm(
        total=total,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=quiet or (total is not None and total < 8 * _COPY_BLOCK) or not sys.stderr.isatty(),
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
