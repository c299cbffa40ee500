"""The command-line commands behind ``main.py`` (chat, serve, init, keygen, tips, purge; ``outbox`` is in
``bot.cli_outbox``)."""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import logging
import os
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bot.line import init as init_line
from bot.line import load_keyring
from bot.runtime import Runtime
from bot.settings import Settings
from storage.crypto import Cipher, KeyRing
from storage.data_dir import DataDirBusy, DataDirLock, OneProcess
from storage.records import OPEN_STATUSES, Tip
from storage.backends import open_store
from storage.interfaces import Store

log = logging.getLogger(__name__)


async def chat(settings: Settings) -> int:
    from bot.channels.console import ConsoleChannel

    runtime = await Runtime.open(settings, role="chat", create=True)  # a local try-out may start a line
    try:
        console = ConsoleChannel(runtime.engine, runtime.cipher)
        runtime.tipster_sink.register("console", console)
        runtime.start_background()  # deliver alerts and replies while the conversation goes on
        await console.run()
        # The session ends at end of input: deliver the alerts it raised before leaving.
        await runtime.worker.drain()
    finally:
        await runtime.close()
    return 0


def raise_open_files_limit() -> int:
    """The soft limit on open files up to the hard one (commonly 1,024 soft: a few hundred idle
    connections would stop the server accepting anything). Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit above %d", soft)
    return soft


def serve(settings: Settings) -> int:
    from uvicorn.config import STARTUP_FAILURE

    from bot.connections import Server
    from bot.web import server_config

    raise_open_files_limit()
    # Header, body and keep-alive timeouts and the concurrency limit: TIPLINE_SERVER__* (bot/web.py).
    server = Server(server_config(settings))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0 if server.started else STARTUP_FAILURE


async def init(settings: Settings) -> int:
    """``init``: set up a new line (the key ring and the empty database); refused on one that is set up."""
    for line in await init_line(settings):
        print(line)
    return 0


async def keygen(settings: Settings, *, rotate: bool) -> int:
    path = settings.resolved_keys_file
    if settings.keyring is not None:
        print("tipline: TIPLINE_KEYRING is set; keygen works on key files (unset it to use one)", file=sys.stderr)
        return 2
    if not rotate:
        # A new key ring is a new line: the database is made with it (as init does), so serve
        # finds both and a lone key file never waits for a serve to make a database beside it.
        for line in await init_line(settings, new_keys_only=True):
            print(line)
        return 0
    try:
        lock = DataDirLock(settings.data_dir, exclusive=True)  # no serve or chat writes meanwhile
    except DataDirBusy as exc:
        print(f"tipline: {exc}", file=sys.stderr)
        return 2
    try:
        ring = KeyRing.load(path).rotated()
        store = await open_store(Path(settings.data_dir), Cipher(ring), settings.database)
        try:
            ring.save(path)  # only after the new ring opened the database (same pepper)
            changed = await store.reencrypt_all()
        finally:
            await store.close()
    finally:
        lock.release()
    print(f"new active key {ring.active_key_id}; {changed} values re-encrypted")
    return 0


def add_tip_commands(commands: argparse._SubParsersAction) -> None:
    tips = commands.add_parser("tips", help="list, show or export tips (decrypted)")
    actions = tips.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="open tips, urgent first")
    listing.add_argument("--all", action="store_true", help="include closed and withdrawn tips")
    show = actions.add_parser("show", help="one tip in full")
    show.add_argument("case", help="case number, e.g. 26-0001")
    export = actions.add_parser("export", help="all tips, decrypted, for the unit's case system")
    export.add_argument("--format", choices=("json", "csv"), default="json")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--media", metavar="DIR", help="also write every picture, decrypted, as DIR/<case>-<n>.jpg (created 0600)")
    actions.add_parser("audit", help="print the officer audit log and verify its hash chain")
    commands.add_parser("purge", help="apply retention now")


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if timestamp else ""


def _who(officer: str) -> str:
    """An officer's pseudonym, shortened; a CLI account as it is ("cli:root")."""
    return officer if officer.startswith("cli:") else f"officer {officer[:8]}"


def _flags(tip: Tip) -> str:
    flags = (("EDITED", tip.altered), ("URGENT", tip.urgent), ("MINOR", tip.minor), ("INCOMPLETE", not tip.complete))
    return " ".join(f for f, on in flags if on)


def tip_record(tip: Tip, followups: list, pictures: int = 0) -> dict:
    return {
        "case": tip.case_number,
        "status": tip.status.value,
        "urgent": tip.urgent,
        "minor": tip.minor,
        "complete": tip.complete,
        "channel": tip.channel,
        "language": tip.language,
        "accepts_replies": tip.contact_ok,
        "edited_outside_tipline": tip.altered,
        "created": _when(tip.created_at),
        "updated": _when(tip.updated_at),
        "answers": tip.answers,
        "followups": [{"author": f.author, "at": _when(f.created_at), "text": f.text} for f in followups],
        "pictures": pictures,
    }


def _operator() -> str:
    """Who read tips on the command line, for the audit log: the account that ran it."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"cli:uid-{os.getuid()}"


async def _audited(store: Store, action: str, tips: list[Tip]) -> None:
    """A CLI read is audited like an officer's: one entry per case shown, or one for a list."""
    async with store.transaction() as tx:
        for tip_id in [t.id for t in tips] if action == "view" else [""]:
            await tx.audit.append(_operator(), tip_id, action, time.time())


async def run_tip_command(settings: Settings, args: argparse.Namespace) -> int:
    cipher = Cipher(load_keyring(settings))
    store = await open_store(Path(settings.data_dir), cipher, settings.database)
    try:
        if args.command == "purge":
            from bot.retention import purge

            # Retention deletes: not beside a running serve or chat on SQLite (their own daily pass
            # does the same), so it says who holds the data directory instead.
            alone = None if settings.database else OneProcess(Path(settings.data_dir), "purge")
            try:
                report = await purge(store, settings, time.time())
            finally:
                if alone is not None:
                    alone.release()
            print(", ".join(f"{name}: {count}" for name, count in report.items()))
            return 0
        if args.action == "audit":
            tips = await store.tips.list(None, limit=None)
            cases = {t.id: t.case_number for t in tips}
            for entry in await store.audit.entries():
                case = cases.get(entry.tip_id, "(purged)") if entry.tip_id else "-"
                print(f"{entry.seq:>6}  {_when(entry.at)}  {_who(entry.officer):<16} {case:<9} {entry.action}")
            problems = await store.audit.verify()
            problems += [f"case {t.case_number}: its row was edited outside Tipline (seal does not match)" for t in tips if t.altered]
            altered = await store.outbox.altered_count()
            if altered:
                problems.append(f"{altered} outbox rows were edited outside Tipline (sink or payload does not match its seal)")
            for problem in problems:
                print(f"tipline: {problem}", file=sys.stderr)
            print("audit chain: " + ("BROKEN" if problems else "intact"))
            return 1 if problems else 0
        if args.action == "list":
            statuses = None if args.all else OPEN_STATUSES
            await _audited(store, "list", [])
            for tip in await store.tips.list(statuses, limit=None):
                local = datetime.fromtimestamp(tip.created_at, settings.zone).strftime("%Y-%m-%d %H:%M %Z")
                print(f"{tip.case_number}  {tip.status.value:<12} {local}  {tip.channel:<9} {_flags(tip)}")
            return 0
        if args.action == "show":
            tip = await store.tips.by_case(args.case)
            if tip is None:
                print(f"tipline: no case {args.case}", file=sys.stderr)
                return 1
            await _audited(store, "view", [tip])
            record = tip_record(tip, await store.followups.for_tip(tip.id), await store.pictures.count_for_tip(tip.id))
            print(json.dumps(record, indent=2, ensure_ascii=False))
            return 0
        everything = await store.tips.list(None, limit=None)
        await _audited(store, "export", [])
        records = [tip_record(t, await store.followups.for_tip(t.id), await store.pictures.count_for_tip(t.id)) for t in everything]
        if args.media:
            written = await _export_pictures(store, everything, Path(args.media))
            print(f"tipline: {written} pictures written to {args.media}", file=sys.stderr)
        text = _export(records, args.format)
        if args.output:
            _write_private(args.output, text)
        else:
            sys.stdout.write(text)
        return 0
    finally:
        await store.close()


async def _export_pictures(store: Store, tips: list[Tip], folder: Path) -> int:
    """Every case's pictures as ``<case>-<n>.jpg``, each readable by its owner only from its first
    byte, in a folder only its owner can enter. Audited with the export."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    written = 0
    for tip in tips:
        for index, picture_id in enumerate(await store.pictures.ids_for_tip(tip.id), start=1):
            image = await store.pictures.get(picture_id)
            if image is None:
                continue
            fd = os.open(folder / f"{tip.case_number}-{index}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(image)
            written += 1
    return written


def _write_private(path: str, text: str) -> None:
    """An export holds every tip decrypted: readable by its owner only (0600) from the first byte,
    even when the file already existed with wider permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


# OWASP's CSV-injection rule: a cell a spreadsheet would read as a formula starts with one of these.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe, so it opens
    as the text the person typed (``=HYPERLINK(...)`` stays words). Numbers and booleans pass."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _export(records: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    out = io.StringIO()
    columns = ["case", "status", "urgent", "minor", "complete", "channel", "language", "accepts_replies", "edited_outside_tipline", "created", "updated"]
    answer_columns = ["danger", "role", "kind", "minors", "where", "when", "details", "contact"]
    writer = csv.writer(out)
    writer.writerow(columns + answer_columns + ["followups"])
    for r in records:
        answers = [r["answers"].get(a) for a in answer_columns]
        answers = [" / ".join(a) if isinstance(a, list) else ("" if a is None else a) for a in answers]
        followups = " / ".join(f"{f['author']}: {f['text']}" for f in r["followups"])
        writer.writerow([spreadsheet_safe(cell) for cell in [r[c] for c in columns] + answers + [followups]])
    return out.getvalue()

