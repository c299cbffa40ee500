"""Backups: an online copy taken while serve answers people, restored whole; a restore refused
while the line runs, with other keys, or from a damaged file."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from storage.sqlite import DB_FILENAME
from tests.bot.test_chat_cli import ENGLISH, chat, run
from tests.channels.test_twilio_sms import (  # noqa: F401 - fixtures used by name
    ENGLISH_FLOW,
    Tipline,
    fake_twilio,
    tipline_factory,
)


async def _report(tipline: Tipline, n: int) -> None:
    sender = f"+1514555{n:04d}"
    for text, _ in ENGLISH_FLOW:
        assert await tipline.say(sender, text)


async def test_a_backup_taken_under_load_restores_every_tip_committed_before_it(tipline_factory, tmp_path: Path) -> None:
    file = tmp_path / "backup.sqlite3"
    async with tipline_factory() as tipline:
        data = Path(tipline.settings.data_dir)
        await asyncio.gather(*(_report(tipline, n) for n in range(6)))
        committed = {t.case_number for t in await tipline.tips()}
        assert len(committed) == 6
        load = asyncio.gather(*(_report(tipline, n) for n in range(6, 14)))  # people keep writing meanwhile
        taken = await asyncio.to_thread(run, ["backup", str(file)], data)
        await load
        assert len(await tipline.tips()) == 14
    assert taken.returncode == 0, taken.stderr
    assert "tips" in taken.stdout and file.stat().st_mode & 0o777 == 0o600
    assert not Path(f"{file}-wal").exists()

    fresh = tmp_path / "restored"
    fresh.mkdir(mode=0o700)
    shutil.copy(data / "keys.json", fresh / "keys.json")  # the key ring, backed up apart
    restored = run(["restore", str(file)], fresh)
    assert restored.returncode == 0, restored.stderr
    listed = run(["tips", "list", "--all"], fresh)
    cases = {line.split()[0] for line in listed.stdout.splitlines()}
    assert committed <= cases and len(cases) <= 14  # every tip committed before the backup, nothing invented
    shown = run(["tips", "show", sorted(committed)[0]], fresh)
    assert "Motel Lune" in shown.stdout  # decrypted with the same keys


async def test_a_restore_is_refused_while_serve_runs(tipline_factory, tmp_path: Path) -> None:
    file = tmp_path / "backup.sqlite3"
    async with tipline_factory() as tipline:
        data = Path(tipline.settings.data_dir)
        await _report(tipline, 1)
        assert (await asyncio.to_thread(run, ["backup", str(file)], data)).returncode == 0
        refused = await asyncio.to_thread(run, ["restore", str(file)], data)
        assert refused.returncode == 2 and "in use" in refused.stderr and "Traceback" not in refused.stderr
        again = await asyncio.to_thread(run, ["backup", str(file)], data)
        assert again.returncode == 2 and "already exists" in again.stderr  # never overwritten


def test_a_restore_with_other_keys_or_from_a_damaged_file_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    chat(data, ENGLISH)
    file = tmp_path / "backup.sqlite3"
    assert run(["backup", str(file)], data).returncode == 0
    other = tmp_path / "other"
    chat(other, ENGLISH[:3])  # another line, with its own key ring
    before = (other / DB_FILENAME).read_bytes()
    refused = run(["restore", str(file)], other)
    assert refused.returncode == 2 and "another key ring" in refused.stderr
    assert (other / DB_FILENAME).read_bytes() == before
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(file.read_bytes()[:4096] + b"\x00" * 8192)
    broken = run(["restore", str(damaged)], data)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    with closing(sqlite3.connect(data / DB_FILENAME)) as db:
        assert db.execute("SELECT count(*) FROM tips").fetchone()[0] == 1
