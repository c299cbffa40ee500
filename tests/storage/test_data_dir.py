"""The data directory is private before anything is written in it, and key rotation never runs
while a server or a chat writes to it."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import keygen
from bot.line import init
from bot.runtime import Runtime
from storage.data_dir import RUNNING_FILENAME, DataDirBusy, DataDirLock


MAIN = Path(__file__).resolve().parents[2] / "main.py"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_init_creates_the_data_dir_0700_before_the_key_file(make_settings, tmp_path: Path) -> None:
    settings = make_settings(data_dir=tmp_path / "fresh" / "data", init=False)
    await init(settings)
    runtime = await Runtime.open(settings)
    try:
        assert _mode(settings.data_dir) == 0o700
        assert _mode(settings.resolved_keys_file) == 0o600
    finally:
        await runtime.close()


async def test_a_data_dir_open_to_others_is_closed_to_them(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    shared = settings.data_dir
    shared.chmod(0o755)
    runtime = await Runtime.open(settings)
    await runtime.close()
    assert _mode(shared) == 0o700


async def test_keygen_rotate_refuses_while_a_runtime_holds_the_data_dir(make_settings, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    runtime = await Runtime.open(settings)
    try:
        before = settings.resolved_keys_file.read_bytes()
        assert await keygen(settings, rotate=True) == 2
        assert "stop serve and chat before rotating keys" in capsys.readouterr().err
        assert settings.resolved_keys_file.read_bytes() == before  # nothing rotated
    finally:
        await runtime.close()
    assert await keygen(settings, rotate=True) == 0  # once it stopped, rotation runs
    assert settings.resolved_keys_file.read_bytes() != before


async def test_a_runtime_does_not_start_during_a_rotation(make_settings) -> None:
    settings = make_settings()
    rotation = DataDirLock(settings.data_dir, exclusive=True)
    try:
        with pytest.raises(DataDirBusy, match="locked by a key rotation"):
            await Runtime.open(settings)
    finally:
        rotation.release()
    runtime = await Runtime.open(settings)  # and starts once it is done
    await runtime.close()


async def test_a_second_process_on_one_sqlite_data_dir_is_refused_naming_the_holder(make_settings) -> None:
    """Two servers on one data dir would both send every alert (security review: 96 alerts twice)."""
    settings = make_settings()
    first = await Runtime.open(settings)
    try:
        with pytest.raises(DataDirBusy) as refused:
            await Runtime.open(settings, role="chat")
        message = str(refused.value)
        assert f"in use by serve (pid {os.getpid()}, since " in message and "TIPLINE_DATABASE_URL" in message
        assert "\n" not in message
        assert await first.store.healthy()  # the first goes on
    finally:
        await first.close()
    assert (settings.data_dir / RUNNING_FILENAME).read_text() == ""  # released: nobody named
    second = await Runtime.open(settings, role="chat")  # free again once the first stopped
    try:
        assert (settings.data_dir / RUNNING_FILENAME).read_text().startswith("chat (pid ")
    finally:
        await second.close()


async def test_purge_beside_a_running_server_says_who_holds_the_data_dir(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    runtime = await Runtime.open(settings)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")} | {"TIPLINE_DATA_DIR": str(settings.data_dir)}
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, str(MAIN), "purge"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by serve (pid" in lines[0], done.stderr
    finally:
        await runtime.close()
