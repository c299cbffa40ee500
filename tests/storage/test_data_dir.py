"""The data directory is private before anything is written in it, and key rotation never runs
while a server or a chat writes to it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bot.cli import keygen
from bot.runtime import Runtime
from storage.data_dir import DataDirBusy, DataDirLock


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_first_run_creates_the_data_dir_0700_before_the_key_file(make_settings, tmp_path: Path) -> None:
    settings = make_settings(data_dir=tmp_path / "fresh" / "data")
    runtime = await Runtime.open(settings)
    try:
        assert _mode(settings.data_dir) == 0o700
        assert _mode(settings.resolved_keys_file) == 0o600
    finally:
        await runtime.close()


async def test_a_data_dir_open_to_others_is_closed_to_them(make_settings, tmp_path: Path) -> None:
    shared = tmp_path / "data"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    runtime = await Runtime.open(make_settings(data_dir=shared))
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
