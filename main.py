"""Tipline's composition root: parse the command, build the settings, start things.

    python main.py chat            talk to the bot in this terminal (stdin → replies on stdout)
    python main.py serve           web server: webhooks, channels, outbox worker
    python main.py init            set up a new line: the key ring and the empty database (once)
    python main.py keygen          the same as init when there is no key file (``--rotate`` to rotate and re-encrypt)
    python main.py flow            print the conversation as a Mermaid diagram
    python main.py tips …          list / show / export tips (see ``tips --help``)
    python main.py purge           apply the retention rules now
    python main.py outbox          pending and dead outbox rows, no content (``outbox retry [ID]``)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

# python-telegram-bot 22 warns on every flood-wait error unless durations are timedeltas.
os.environ.setdefault("PTB_TIMEDELTA", "1")

from bot.settings import Settings, SettingsError, load_settings
from storage.crypto import DecryptionError, KeyRingError
from storage.data_dir import DataDirBusy
from storage.opening import StorageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tipline", description="Anonymous tip line over SMS and Telegram.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the web server, channels and outbox worker")
    commands.add_parser("chat", help="talk to the bot in this terminal (works piped; ends at end of input)")
    commands.add_parser("init", help="set up a new line: the key ring file (0600) and the empty database; refused on one set up")
    keygen = commands.add_parser("keygen", help="create the key ring file (0600) and the database with it, like init")
    keygen.add_argument("--rotate", action="store_true", help="add a new active key and re-encrypt all data")
    commands.add_parser("flow", help="print the conversation flow as a Mermaid diagram")
    backup = commands.add_parser("backup", help="an online, consistent copy of the SQLite database (0600), while serve runs")
    backup.add_argument("file", help="the backup file to create (never overwritten)")
    restore = commands.add_parser("restore", help="put a backup back (refused while serve or chat runs, or with other keys)")
    restore.add_argument("file", help="a file written by backup")
    from bot.cli import add_tip_commands
    from bot.cli_outbox import add_outbox_commands

    add_tip_commands(commands)
    add_outbox_commands(commands)
    return parser


def _chat_log_level(settings: Settings) -> str:
    # The conversation is on stdout and alerts on stderr; routine INFO lines would drown them.
    return settings.log_level if "log_level" in settings.model_fields_set else "WARNING"


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "flow":
        from handlers.flow import flow_diagram

        print(flow_diagram())
        return 0
    settings = load_settings()
    from bot.logs import setup_logging

    if args.command == "chat":
        setup_logging(_chat_log_level(settings))
        from bot.cli import chat

        return asyncio.run(chat(settings))
    setup_logging(settings.log_level)
    if args.command == "serve":
        from bot.cli import serve

        return serve(settings)
    if args.command == "init":
        from bot.cli import init

        return asyncio.run(init(settings))
    if args.command == "keygen":
        from bot.cli import keygen

        return asyncio.run(keygen(settings, rotate=args.rotate))
    if args.command in ("backup", "restore"):
        from bot import backup

        if settings.database:
            raise StorageError(
                f"{args.command} copies the SQLite database; with PostgreSQL (TIPLINE_DATABASE_URL) use pg_dump "
                "and pg_restore, as the README says (and keep the key ring apart)"
            )
        print((backup.backup if args.command == "backup" else backup.restore)(settings, Path(args.file)))
        return 0
    if args.command == "outbox":
        from bot.cli_outbox import run_outbox_command

        return asyncio.run(run_outbox_command(settings, args))
    from bot.cli import run_tip_command

    return asyncio.run(run_tip_command(settings, args))


def main() -> None:
    try:
        code = run(sys.argv[1:])
    except SettingsError as exc:
        print(f"tipline: {exc}", file=sys.stderr)
        code = 2
    except (KeyRingError, DecryptionError, StorageError, DataDirBusy) as exc:
        print(f"tipline: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
