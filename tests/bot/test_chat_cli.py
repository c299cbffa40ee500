"""``python main.py chat`` and the unit's commands, run as a user runs them: a subprocess with
piped input on a temporary data directory. Then the raw database bytes and the logs are read."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.i18n import Catalogues
from storage.crypto import KeyRing

ROOT = Path(__file__).resolve().parents[2]
RECEIPT = re.compile(r"\d{3}-\d{3}-\d{3}-\d{3}")
TEXT = Catalogues.load().text
PLACE = "Motel Zebrafish 4417 Imaginary Road"
DETAILS = ("Grey van with plate QX7-ZB9 every night", "A man named Zorblatt collects passports")
ENGLISH = ["1", "2", "2", "2", "2", PLACE, "3", *DETAILS, "DONE", "2", "1"]
FRENCH = ["2", "2", "2", "2", "2", "Hôtel Colibri-Quasar", "3", "Une camionnette grise Wxyzq", "FINI", "2", "1"]


def run(args: list[str], data_dir: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ.get("PATH", ""), "TIPLINE_DATA_DIR": str(data_dir), "PTB_TIMEDELTA": "1", **env}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        cwd=data_dir.parent,
        timeout=120,
    )


def chat(data_dir: Path, lines: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return run(["chat"], data_dir, "\n".join(lines) + "\n", **env)


def raw_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.iterdir()) if p.is_file() and p.name != "keys.json")


def test_scripted_english_conversation_ends_with_a_receipt_and_an_officer_alert(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = chat(data, ENGLISH)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(TEXT("en", "language.question"))
    assert TEXT("en", "danger.question") in result.stdout
    assert RECEIPT.search(result.stdout.split(TEXT("en", "submitted.receipt", receipt="{r}").split("{r}")[0])[1])
    assert "OFFICER ALERT" in result.stderr and "New tip, case" in result.stderr
    assert "created a new key ring" in result.stderr  # the first local run says so
    assert (data / "keys.json").stat().st_mode & 0o777 == 0o600


def test_scripted_french_conversation_gets_french_prompts(tmp_path: Path) -> None:
    result = chat(tmp_path / "data", FRENCH)
    assert result.returncode == 0, result.stderr
    assert TEXT("fr", "danger.question") in result.stdout
    assert TEXT("fr", "role.question") in result.stdout
    assert RECEIPT.search(result.stdout) and TEXT("en", "danger.question") not in result.stdout


def test_exit_half_way_leaves_no_draft(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = chat(data, ["1", "2", "2", "EXIT"])
    assert "erased" in result.stdout
    with sqlite3.connect(data / "tipline.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM drafts").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM tips").fetchone() == (0,)


def test_a_second_run_resumes_the_unfinished_draft(tmp_path: Path) -> None:
    data = tmp_path / "data"
    chat(data, ["2", "2", "2"])
    result = chat(data, ["2", "2", "Rue Fictive", "3", "détail", "FINI", "2", "1"])
    assert result.stdout.startswith(TEXT("fr", "resume"))
    assert RECEIPT.search(result.stdout)


def test_database_and_debug_logs_hold_no_typed_text_or_sender(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = chat(data, ENGLISH, TIPLINE_LOG_LEVEL="DEBUG")
    assert result.returncode == 0
    assert "DEBUG" in result.stderr or "INFO" in result.stderr  # logging was really on
    stored = raw_bytes(data)
    assert len(stored) > 10_000
    logs = result.stderr.split("OFFICER ALERT")[0] + result.stderr.split("+----")[-1]
    for secret in (PLACE, *DETAILS, "Zorblatt", "Zebrafish", "QX7-ZB9", "local"):
        assert secret.encode() not in stored, secret
        assert secret not in logs, secret


def test_keygen_writes_a_private_key_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run(["keygen"], data)
    assert first.returncode == 0 and (data / "keys.json").stat().st_mode & 0o777 == 0o600
    ring = json.loads((data / "keys.json").read_text())
    assert ring["format"] == "tipline-keyring/1" and len(ring["keys"]) == 1
    again = run(["keygen"], data)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_a_key_that_does_not_match_the_data_gives_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    chat(data, ENGLISH)
    (data / "keys.json").unlink()
    missing = chat(data, ["1"])
    assert missing.returncode == 2 and "key ring file" in missing.stderr and "Traceback" not in missing.stderr
    refused = run(["keygen"], data)  # new keys beside existing data could never read it
    assert refused.returncode == 2 and "exists without its key ring" in refused.stderr
    assert not (data / "keys.json").exists()
    KeyRing.generate().save(data / "keys.json")  # another line's key ring
    wrong = chat(data, ["1"])
    assert wrong.returncode == 2
    assert "does not match this database" in wrong.stderr and "Traceback" not in wrong.stderr


def test_rotation_re_encrypts_and_keeps_data_readable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    chat(data, ENGLISH)
    rotated = run(["keygen", "--rotate"], data)
    assert rotated.returncode == 0 and "re-encrypted" in rotated.stdout
    assert int(rotated.stdout.split(";")[1].split()[0]) >= 2
    listing = run(["tips", "list"], data)
    case = listing.stdout.split()[0]
    details = json.loads(run(["tips", "show", case], data).stdout)
    assert details["answers"]["where"] == PLACE


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_tips_export_is_decrypted(tmp_path: Path, fmt: str) -> None:
    data = tmp_path / "data"
    chat(data, ENGLISH)
    exported = run(["tips", "export", "--format", fmt], data)
    assert exported.returncode == 0
    assert PLACE in exported.stdout and DETAILS[0] in exported.stdout


def test_flow_prints_a_mermaid_diagram(tmp_path: Path) -> None:
    result = run(["flow"], tmp_path / "data")
    assert result.stdout.startswith("flowchart TD") and "danger -.->|1: mark_urgent| role" in result.stdout


def test_officer_commands_in_chat_and_the_audit_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = ["1", "2", "2", "2", "2", PLACE, "3", DETAILS[0], "DONE", "1", "1", "/list"]
    first = chat(data, script)
    case = re.search(r"(\d\d-\d{4}) · new", first.stdout).group(1)
    code = RECEIPT.search(first.stdout).group(0)
    result = chat(data, [f"/show {case}", f"/reply {case} Which floor?", f"CHECK {code}", "Third floor", f"/close {case} done"])
    # The console tipster is told, without the content, that something arrived; CHECK reads it.
    assert TEXT("en", "tipster.reply_notice") in result.stdout
    assert TEXT("en", "check.reply", text="Which floor?") in result.stdout
    assert TEXT("en", "tipster.answer_sent") in result.stdout
    audit = run(["tips", "audit"], data)
    assert audit.returncode == 0 and audit.stdout.rstrip().endswith("audit chain: intact")
    assert [line.split()[-1] for line in audit.stdout.splitlines()[:-1]] == ["list", "view", "reply", "close"]
    # Reads on the command line are audited too, under the account that ran them.
    for command in (["tips", "list"], ["tips", "show", case], ["tips", "export"]):
        assert run(command, data).returncode == 0
    audit = run(["tips", "audit"], data)
    lines = audit.stdout.splitlines()[:-1]
    assert [line.split()[-1] for line in lines[-3:]] == ["list", "view", "export"]
    assert all(" cli:" in line for line in lines[-3:]) and case in lines[-2] and audit.returncode == 0
    with sqlite3.connect(data / "tipline.sqlite3") as raw:
        raw.execute("UPDATE audit SET action = 'view' WHERE seq = 4")
    tampered = run(["tips", "audit"], data)
    assert tampered.returncode == 1 and "audit row 4 was altered" in tampered.stderr


def test_an_audit_chain_rebuilt_without_the_keys_is_detected(tmp_path: Path) -> None:
    """Someone with write access to the database file but not the key ring edits a row and
    recomputes every hash (and the head) the way an unkeyed chain would be built."""
    from storage.crypto import unkeyed_chain_hash
    from storage.records import AuditEntry

    data = tmp_path / "data"
    first = chat(data, ["1", "2", "2", "2", "2", PLACE, "3", DETAILS[0], "DONE", "1", "1", "/list"])
    case = re.search(r"(\d\d-\d{4}) · new", first.stdout).group(1)
    chat(data, [f"/show {case}", f"/close {case} done"])
    with sqlite3.connect(data / "tipline.sqlite3") as raw:
        raw.execute("UPDATE audit SET action = 'list' WHERE action = 'view'")  # hide that it was read
        previous = "0" * 64
        for row in raw.execute("SELECT seq, at, officer, tip_id, action FROM audit ORDER BY seq").fetchall():
            entry = AuditEntry(*row, previous, "")
            entry.hash = unkeyed_chain_hash(previous, entry.record())
            raw.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (previous, entry.hash, entry.seq))
            previous = entry.hash
        raw.execute("UPDATE meta SET value = ? WHERE name = 'audit_head'", (f"{entry.seq}:{entry.hash}",))
    audit = run(["tips", "audit"], data)
    assert audit.returncode == 1 and audit.stdout.rstrip().endswith("audit chain: BROKEN")
    assert "audit row 1 was altered" in audit.stderr and "audit row 3 was altered" in audit.stderr


def test_a_tip_row_edited_in_the_database_is_flagged_and_its_receipt_no_longer_opens_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = ["1", "2", "2", "2", "2", PLACE, "3", DETAILS[0], "DONE", "1", "1"]
    code_a = RECEIPT.search(chat(data, script).stdout).group(0)
    code_b = RECEIPT.search(chat(data, ["hello", *script[1:]]).stdout).group(0)  # "hello" is English: no language question
    with sqlite3.connect(data / "tipline.sqlite3") as raw:
        (a, hash_a), (b, hash_b) = raw.execute("SELECT case_number, receipt_hash FROM tips ORDER BY case_number").fetchall()
        # Swap the two receipt hashes (through a placeholder: the column is UNIQUE) and flag A urgent.
        raw.execute("UPDATE tips SET receipt_hash = 'x' WHERE case_number = ?", (a,))
        raw.execute("UPDATE tips SET receipt_hash = ? WHERE case_number = ?", (hash_a, b))
        raw.execute("UPDATE tips SET receipt_hash = ?, urgent = 1 WHERE case_number = ?", (hash_b, a))
    checked = chat(data, [f"CHECK {code_b}"]).stdout
    assert TEXT("en", "receipt.unknown") in checked and a not in checked  # B's code no longer opens A
    assert TEXT("en", "receipt.unknown") in chat(data, [f"CHECK {code_a}"]).stdout
    listing = run(["tips", "list"], data).stdout
    assert all("EDITED" in line for line in listing.splitlines())
    audit = run(["tips", "audit"], data)
    assert audit.returncode == 1 and f"case {a}: its row was edited outside Tipline" in audit.stderr
    shown = chat(data, [f"/show {a}"]).stdout
    assert TEXT("en", "alert.flag.altered") in shown


def test_the_key_ring_can_come_from_an_environment_variable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    chat(data, ENGLISH)
    ring = (data / "keys.json").read_text()
    (data / "keys.json").unlink()
    listing = run(["tips", "list"], data, TIPLINE_KEYRING=ring)
    assert listing.returncode == 0 and "open" in listing.stdout
    assert not (data / "keys.json").exists()  # nothing written: the variable is the key ring
    refused = run(["keygen"], data, TIPLINE_KEYRING=ring)
    assert refused.returncode == 2 and "TIPLINE_KEYRING is set" in refused.stderr
    broken = run(["tips", "list"], data, TIPLINE_KEYRING="{not json")
    assert broken.returncode == 2 and "key ring: not valid JSON" in broken.stderr and "Traceback" not in broken.stderr


FORMULAS = ("=HYPERLINK(\"http://evil.example/x\",\"Click\")", "+1-2", "-3+4", "@SUM(A1)", "\tTAB", "\rCR")


def test_a_csv_export_opens_formulas_as_text_and_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    import csv

    data = tmp_path / "data"
    chat(data, ["1", "2", "2", "2", "2", FORMULAS[0], "3", *FORMULAS[1:], "DONE", "2", "1"])
    target = tmp_path / "tips.csv"
    target.write_text("old")
    os.chmod(target, 0o644)  # an existing file is narrowed too
    result = run(["tips", "export", "--format", "csv", "-o", str(target)], data)
    assert result.returncode == 0
    assert target.stat().st_mode & 0o777 == 0o600
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    cells = [cell for row in rows[1:] for cell in row]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'" + FORMULAS[0] in cells  # the person's words are all there, as text
    details = next(c for c in cells if "TAB" in c)
    assert details.startswith("'")
    # JSON keeps the words exactly as typed.
    exported = json.loads(run(["tips", "export", "--format", "json"], data).stdout)
    assert exported[0]["answers"]["where"] == FORMULAS[0]


def test_tips_export_media_writes_each_picture_readable_by_its_owner_only(tmp_path: Path) -> None:
    import asyncio

    from PIL import Image

    from bot.pictures import clean
    from bot.settings import PictureSettings
    from storage.crypto import Cipher, KeyRing
    from storage.sqlite import SqliteStore
    from tests.fakes.images import phone_photo

    data = tmp_path / "data"
    chat(data, ENGLISH)
    kept = clean(phone_photo(), PictureSettings()).image

    async def attach() -> str:
        store = await SqliteStore.open(data, Cipher(KeyRing.load(data / "keys.json")))
        try:
            (tip,) = await store.tips.list(None)
            async with store.transaction() as tx:
                await tx.pictures.add("p1", kept, tip.created_at, tip_id=tip.id)
            return tip.case_number
        finally:
            await store.close()

    case = asyncio.run(attach())
    folder = tmp_path / "media"
    result = run(["tips", "export", "--media", str(folder), "-o", str(tmp_path / "tips.json")], data)
    assert result.returncode == 0, result.stderr
    written = folder / f"{case}-1.jpg"
    assert written.read_bytes() == kept
    with Image.open(written) as picture:
        assert picture.size == (80, 120)
    assert written.stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700
    assert json.loads((tmp_path / "tips.json").read_text())[0]["pictures"] == 1
    assert run(["tips", "audit"], data).stdout.split("\n")[-3].split()[-1] == "export"
