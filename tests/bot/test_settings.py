"""Settings: the names of DESIGN §5, one clear line per problem, secrets never printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(_env_file=None)
    assert settings.data_dir == Path("data")
    assert settings.resolved_keys_file == Path("data/keys.json")
    assert (settings.host, settings.port, settings.public_url) == ("127.0.0.1", 8080, None)
    assert settings.telegram.token is None and settings.telegram.api_url == "https://api.telegram.org"
    assert settings.telegram_mode == "polling"
    assert settings.twilio.api_url == "https://api.twilio.com" and not settings.twilio.enabled
    assert settings.officers.telegram_chat_ids == [] and settings.officers.sms_numbers == []
    assert settings.draft_timeout_minutes == 30


def test_environment_names_nested_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "TIPLINE_DATA_DIR": "/srv/tipline",
        "TIPLINE_PORT": "9000",
        "TIPLINE_PUBLIC_URL": "https://tips.example.org/",
        "TIPLINE_TELEGRAM__TOKEN": "123456:secret-token-value",
        "TIPLINE_TELEGRAM__WEBHOOK_SECRET": "abc_DEF-123",
        "TIPLINE_TWILIO__ACCOUNT_SID": "AC" + "1" * 32,
        "TIPLINE_TWILIO__AUTH_TOKEN": "twilio-auth",
        "TIPLINE_TWILIO__FROM_NUMBER": "+18005550100",
        "TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS": "-1001, -1002",
        "TIPLINE_OFFICERS__SMS_NUMBERS": "+15145550001,+15145550002",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.data_dir == Path("/srv/tipline") and settings.port == 9000
    assert settings.public_url == "https://tips.example.org" and settings.telegram_mode == "webhook"
    assert settings.telegram.token.get_secret_value() == "123456:secret-token-value"
    assert settings.officers.telegram_chat_ids == [-1001, -1002]
    assert settings.officers.sms_numbers == ["+15145550001", "+15145550002"]
    assert settings.twilio.enabled
    printed = repr(settings) + str(settings.model_dump())
    assert "secret-token-value" not in printed and "twilio-auth" not in printed


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIPLINE_PORT=8181\nTIPLINE_OFFICERS__LANGUAGE=fr\n")
    settings = load_settings(_env_file=tmp_path / ".env")
    assert settings.port == 8181 and settings.officers.language == "fr"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("TIPLINE_PORT", "eighty", "setting TIPLINE_PORT:"),
        ("TIPLINE_PORT", "70000", "setting TIPLINE_PORT:"),
        ("TIPLINE_PUBLIC_URL", "tips.example.org", "setting TIPLINE_PUBLIC_URL: must start with https://"),
        ("TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS", "-100,abc", "setting TIPLINE_OFFICERS__TELEGRAM_CHAT_IDS:"),
        ("TIPLINE_TELEGRAM__WEBHOOK_SECRET", "has spaces!", "setting TIPLINE_TELEGRAM__WEBHOOK_SECRET:"),
        ("TIPLINE_TWILIO__ACCOUNT_SID", "AC" + "2" * 32, "missing TWILIO__AUTH_TOKEN, TWILIO__FROM_NUMBER"),
    ],
)
def test_malformed_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    assert named in str(raised.value)
    assert str(raised.value).count("\n") == 0


def test_start_up_stops_with_one_clear_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "TIPLINE_PORT": "not-a-port", "TIPLINE_TELEGRAM__TOKEN": "999:do-not-print-me"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("tipline: setting TIPLINE_PORT:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "do-not-print-me" not in result.stderr + result.stdout
