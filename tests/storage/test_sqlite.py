"""SQLite specifics: PRAGMAs, migrations, key binding, re-encryption after rotation, row binding
end to end, and that no plaintext reaches any file of the data directory."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from pathlib import Path

import aiosqlite
import pytest

from storage.crypto import Cipher, DecryptionError, KeyRing, KeyRingError
from storage.records import Draft, Followup, OutboxItem, OutboxStatus, Tip, TipStatus
from storage.sqlite import DB_FILENAME, ENCRYPTED_COLUMNS, MIGRATIONS, SqliteStore, StorageError

T0 = 1_800_000_000.0

SECRETS = {
    "answers": "ZEBRA-PLACE-4417",
    "draft": "OCTOPUS-DRAFT-2291",
    "contact": "+1555-KESTREL-0188",
    "reason": "LYNX-REASON-8820",
    "followup": "HERON-FOLLOWUP-5530",
    "outbox": "MARMOT-OUTBOX-7702",
    "replies": "IBIS-REPLY-3316",
    "refs": "TAPIR-REF-6604",
}


@asynccontextmanager
async def opened(data_dir: Path, cipher: Cipher) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(data_dir, cipher)
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def raw(store: SqliteStore) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
        yield conn


def tip(tip_id: str, case: str, **extra: object) -> Tip:
    return Tip(
        id=tip_id, case_number=case, status=TipStatus.OPEN, sender=f"sender-{tip_id}", channel="sms",
        language="en", created_at=T0, updated_at=T0, answers={"where": f"answer of {tip_id}"}, **extra,
    )  # fmt: skip


async def fill_every_encrypted_column(store: SqliteStore) -> None:
    """One value in every encrypted column (see ENCRYPTED_COLUMNS), each holding a secret."""
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("s1", {"note": SECRETS["draft"]}, T0, T0 + 600))
        await tx.tips.save(
            tip("t1", "26-0001", contact_address=SECRETS["contact"], contact_ok=True, close_reason=SECRETS["reason"])
        )
        await tx.tips.save(tip("t2", "26-0002"))
        t1 = await tx.tips.get("t1")
        t1.answers = {"where": SECRETS["answers"], "who": ["a", "b"]}
        await tx.tips.save(t1)
        await tx.followups.add(Followup("f1", "t1", "tipster", SECRETS["followup"], T0 + 1))
        await tx.outbox.add(OutboxItem("o1", "console", {"text": SECRETS["outbox"]}, OutboxStatus.PENDING, 0, T0, T0))
        await tx.processed.add("sms:SM1", [{"text": SECRETS["replies"]}], T0)
        await tx.message_refs.add("s1", [SECRETS["refs"]], T0)


def key_ids_in_database(path: Path) -> list[str]:
    """Parse the key id out of every stored envelope: version | id length | id | ..."""
    found = []
    with closing(sqlite3.connect(path)) as conn:
        for table, _key, column, _row in ENCRYPTED_COLUMNS:
            for (blob,) in conn.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"):
                assert blob[0] == 1
                found.append(blob[2 : 2 + blob[1]].decode("ascii"))
    return found


# --- PRAGMAs and files ---------------------------------------------------------------------------


async def _pragma(conn: aiosqlite.Connection, name: str) -> object:
    async with conn.execute(f"PRAGMA {name}") as cursor:
        return (await cursor.fetchone())[0]


async def test_pragmas(store: SqliteStore) -> None:
    with raw(store) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    assert await _pragma(store._writer, "journal_mode") == "wal"
    assert await _pragma(store._writer, "synchronous") == 2  # FULL
    assert await _pragma(store._writer, "secure_delete") == 1
    assert await _pragma(store._writer, "foreign_keys") == 1
    assert await _pragma(store._reader, "query_only") == 1


async def test_reader_cannot_write(store: SqliteStore) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await store._reader.execute("DELETE FROM drafts")


async def test_files_are_owner_only(store: SqliteStore) -> None:
    await fill_every_encrypted_column(store)
    data_dir = store.path.parent
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    files = sorted(p.name for p in data_dir.iterdir())
    assert files == [DB_FILENAME, f"{DB_FILENAME}-shm", f"{DB_FILENAME}-wal"]
    for path in data_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


# --- migrations ----------------------------------------------------------------------------------


async def test_schema_version_and_reopen_is_idempotent(tmp_path: Path, cipher: Cipher) -> None:
    data_dir = tmp_path / "data"
    async with opened(data_dir, cipher) as store:
        assert await store.schema_version() == len(MIGRATIONS) >= 1
        async with store.transaction() as tx:
            await tx.tips.save(tip("t1", "26-0001"))
    async with opened(data_dir, cipher) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        assert (await store.tips.get("t1")).answers == {"where": "answer of t1"}
        with raw(store) as conn:
            # The key fingerprint and the integrity flag, each written once; the start-up write's row.
            assert sorted(r[0] for r in conn.execute("SELECT name FROM meta")) == ["integrity", "key_fingerprint", "opened_at"]
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_newer_schema_is_refused(tmp_path: Path, cipher: Cipher) -> None:
    data_dir = tmp_path / "data"
    async with opened(data_dir, cipher) as store:
        with raw(store) as conn:
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StorageError, match="newer than this Tipline"):
        await SqliteStore.open(data_dir, cipher)


# --- key binding and rotation --------------------------------------------------------------------


async def test_other_key_ring_is_refused_clearly(store: SqliteStore) -> None:
    await fill_every_encrypted_column(store)
    with pytest.raises(KeyRingError, match="key ring does not match this database") as caught:
        await SqliteStore.open(store.path.parent, Cipher(KeyRing.generate()))
    assert not isinstance(caught.value.__cause__, sqlite3.Error)
    assert "TIPLINE_KEYS_FILE" in str(caught.value)
    assert (await store.tips.get("t1")).contact_address == SECRETS["contact"]  # nothing was harmed


async def test_reencrypt_all_after_rotation(tmp_path: Path, keyring: KeyRing) -> None:
    data_dir, rotated = tmp_path / "data", keyring.rotated()
    async with opened(data_dir, Cipher(keyring)) as store:
        await fill_every_encrypted_column(store)
        before = {t: await store.tips.get(t) for t in ("t1", "t2")}
    assert set(key_ids_in_database(data_dir / DB_FILENAME)) == {keyring.active_key_id}

    async with opened(data_dir, Cipher(rotated)) as store:  # same pepper: the fingerprint matches
        assert (await store.tips.get("t1")) == before["t1"]  # old rows open before re-encryption
        changed = await store.reencrypt_all()
        sealed = key_ids_in_database(store.path)
        assert changed == len(sealed) == 9  # draft, 2 × answers, contact, reason, follow-up, reply, outbox, refs
        assert set(sealed) == {rotated.active_key_id}
        assert await store.reencrypt_all() == 0
        assert {t: await store.tips.get(t) for t in ("t1", "t2")} == before
        assert (await store.drafts.get("s1")).state == {"note": SECRETS["draft"]}
        assert [f.text for f in await store.followups.for_tip("t1")] == [SECRETS["followup"]]
        assert (await store.outbox.get("o1")).payload == {"text": SECRETS["outbox"]}
        assert await store.processed.replies_for("sms:SM1") == [{"text": SECRETS["replies"]}]
        assert await store.message_refs.get("s1") == [SECRETS["refs"]]

    new_id = rotated.active_key_id
    new_only = KeyRing(new_id, {new_id: rotated.keys[new_id]}, rotated.pepper)
    async with opened(data_dir, Cipher(new_only)) as store:  # the old key is no longer needed
        assert (await store.tips.get("t1")) == before["t1"]


# --- row binding, end to end ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("copy_sql", "victim"),
    [
        pytest.param("UPDATE tips SET answers = (SELECT answers FROM tips WHERE id = 't1') WHERE id = 't2'",
                     "t2", id="tip-to-tip"),
        pytest.param("UPDATE tips SET contact = (SELECT contact FROM tips WHERE id = 't1') WHERE id = 't2'",
                     "t2", id="contact-to-other-tip"),
        pytest.param("UPDATE tips SET close_reason = contact WHERE id = 't1'", "t1", id="column-to-column"),
    ],
)  # fmt: skip
async def test_ciphertext_copied_into_another_slot_does_not_open(
    store: SqliteStore, copy_sql: str, victim: str
) -> None:
    await fill_every_encrypted_column(store)
    with raw(store) as conn:
        conn.execute(copy_sql)
    with pytest.raises(DecryptionError):
        await store.tips.get(victim)
    if victim == "t2":
        assert (await store.tips.get("t1")).answers["where"] == SECRETS["answers"]


async def test_draft_copied_to_another_sender_does_not_open(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        await tx.drafts.save(Draft("alice", {"note": "mine"}, T0, T0 + 60))
        await tx.drafts.save(Draft("mallory", {"note": "theirs"}, T0, T0 + 60))
    with raw(store) as conn:
        conn.execute(
            "UPDATE drafts SET state = (SELECT state FROM drafts WHERE sender = 'alice') WHERE sender = 'mallory'"
        )
    with pytest.raises(DecryptionError):
        await store.drafts.get("mallory")
    assert (await store.drafts.get("alice")).state == {"note": "mine"}



async def test_the_outbox_listing_never_opens_a_payload(store: SqliteStore) -> None:
    """``python main.py outbox`` must work (and show nothing of the content) even where a payload
    would not open: the listing does not read that column at all."""
    await fill_every_encrypted_column(store)
    with raw(store) as conn:
        conn.execute("UPDATE outbox SET payload = x'00' WHERE id = 'o1'")
    assert (await store.outbox.get("o1")).payload is None  # read as a row that does not open
    (entry,) = await store.outbox.listing((OutboxStatus.PENDING,))
    assert (entry.id, entry.sink, entry.status) == ("o1", "console", OutboxStatus.PENDING)


# --- no plaintext on disk ------------------------------------------------------------------------


def assert_no_plaintext(data_dir: Path, needles: list[str]) -> int:
    scanned = 0
    for path in data_dir.iterdir():
        content = path.read_bytes()
        scanned += len(content)
        for needle in needles:
            for encoded in (needle.encode("utf-8"), needle.encode("utf-16-le")):
                assert encoded not in content, f"{needle!r} in {path.name}"
    return scanned


async def test_no_plaintext_in_database_or_wal(store: SqliteStore) -> None:
    await fill_every_encrypted_column(store)
    data_dir = store.path.parent
    wal = data_dir / f"{DB_FILENAME}-wal"
    assert wal.stat().st_size > 0  # the rows are still in the WAL: it is scanned too
    with raw(store) as conn:  # the sender pseudonym is stored in clear; it proves the scan works
        assert conn.execute("SELECT count(*) FROM tips WHERE sender = 'sender-t1'").fetchone()[0] == 1
    assert b"sender-t1" in b"".join(p.read_bytes() for p in data_dir.iterdir())
    assert assert_no_plaintext(data_dir, list(SECRETS.values())) > 0
    await store.checkpoint()
    assert wal.stat().st_size == 0
    assert assert_no_plaintext(data_dir, list(SECRETS.values())) > 0
    assert (await store.tips.get("t1")).contact_address == SECRETS["contact"]


async def test_secure_delete_leaves_no_trace_of_deleted_rows(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        await tx.tips.save(tip("keep", "26-0001"))
        await tx.tips.save(tip("gone", "26-0002", receipt_hash="WALRUS-RECEIPT-0042"))
    await store.checkpoint()
    assert b"WALRUS-RECEIPT-0042" in store.path.read_bytes()
    async with store.transaction() as tx:
        await tx.tips.delete("gone")
    await store.checkpoint()
    for path in store.path.parent.iterdir():
        assert b"WALRUS-RECEIPT-0042" not in path.read_bytes(), path.name
    assert await store.tips.get("keep") is not None


# --- integrity: sealed tips, outbox bound to its sink, keyed audit chain, and the upgrade --------


def _as_written_before_integrity(path: Path, cipher: Cipher, *, break_chain: bool = False) -> None:
    """Turn a database into what schema 2 wrote, as the later migrations leave it: no tip seals,
    outbox payloads bound to their id only, an unkeyed SHA-256 audit chain, no integrity flag."""
    from storage.crypto import unkeyed_chain_hash
    from storage.records import AuditEntry

    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("UPDATE tips SET seal = NULL")  # as migration 3 leaves an older database's tips
        conn.execute("DELETE FROM meta WHERE name = 'integrity'")
        for item_id, sink, blob in conn.execute("SELECT id, sink, payload FROM outbox").fetchall():
            plain = cipher.decrypt(blob, table="outbox", column="payload", row=f"{item_id}|{sink}")
            conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (cipher.encrypt(plain, table="outbox", column="payload", row=item_id), item_id))
        previous = "0" * 64
        for row in conn.execute("SELECT seq, at, officer, tip_id, action FROM audit ORDER BY seq").fetchall():
            entry = AuditEntry(*row, previous, "")
            entry.hash = unkeyed_chain_hash(previous, entry.record())
            conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (previous, entry.hash, entry.seq))
            previous = entry.hash
        conn.execute("UPDATE meta SET value = ? WHERE name = 'audit_head'", (f"{entry.seq}:{entry.hash}",))
        if break_chain:
            conn.execute("UPDATE audit SET action = 'acknowledge' WHERE seq = 1")


async def _fill(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        await tx.tips.save(tip("t1", "26-0001", receipt_hash="r1", urgent=True))
        await tx.outbox.add(OutboxItem("o1", "telegram:-1001", {"kind": "alert", "tip_id": "t1"}, OutboxStatus.PENDING, 0, T0, T0))
        await tx.audit.append("officer-1", "t1", "view", T0)
        await tx.audit.append("officer-1", "", "list", T0 + 1)


async def test_a_database_from_before_the_seals_is_upgraded_once_and_verifies(tmp_path: Path, cipher: Cipher) -> None:
    data_dir = tmp_path / "data"
    async with opened(data_dir, cipher) as store:
        await _fill(store)
        path = store.path
    _as_written_before_integrity(path, cipher)
    async with opened(data_dir, cipher) as store:
        assert await store.schema_version() == len(MIGRATIONS)
        upgraded = await store.tips.by_receipt_hash("r1")
        assert upgraded is not None and not upgraded.altered and upgraded.urgent
        assert (await store.outbox.get("o1")).payload == {"kind": "alert", "tip_id": "t1"}
        assert await store.audit.verify() == []
        assert [e.action for e in await store.audit.entries()] == ["view", "list"]
        with raw(store) as conn:  # once: a seal removed later is an edit, not an old row
            conn.execute("UPDATE tips SET seal = NULL")
    async with opened(data_dir, cipher) as store:
        assert (await store.tips.get("t1")).altered and await store.tips.by_receipt_hash("r1") is None


async def test_an_audit_chain_already_broken_before_the_upgrade_stays_reported(tmp_path: Path, cipher: Cipher) -> None:
    data_dir = tmp_path / "data"
    async with opened(data_dir, cipher) as store:
        await _fill(store)
        path = store.path
    _as_written_before_integrity(path, cipher, break_chain=True)
    async with opened(data_dir, cipher) as store:
        problems = await store.audit.verify()
    assert problems == ["1 audit rows did not verify before the chain was keyed (rows up to 2)"]


async def test_a_flipped_flag_or_a_swapped_receipt_hash_marks_the_tip_altered(tmp_path: Path, cipher: Cipher) -> None:
    async with opened(tmp_path / "data", cipher) as store:
        async with store.transaction() as tx:
            await tx.tips.save(tip("t1", "26-0001", receipt_hash="r1"))
            await tx.tips.save(tip("t2", "26-0002", receipt_hash="r2", minor=True))
        assert not (await store.tips.get("t1")).altered
        with raw(store) as conn:
            conn.execute("UPDATE tips SET minor = 0 WHERE id = 't2'")
            conn.execute("UPDATE tips SET receipt_hash = 'r9' WHERE id = 't1'")
        assert (await store.tips.get("t2")).altered and (await store.tips.get("t1")).altered
        assert await store.tips.by_receipt_hash("r9") is None
        async with store.transaction() as tx:  # an officer's /ack saves it: the edit is not laundered
            acknowledged = await tx.tips.get("t2")
            acknowledged.status = TipStatus.ACKNOWLEDGED
            await tx.tips.save(acknowledged)
        assert (await store.tips.get("t2")).altered


async def test_a_picture_copied_into_another_row_does_not_open(store) -> None:
    import sqlite3 as raw_sqlite

    from storage.crypto import DecryptionError

    async with store.transaction() as tx:
        await tx.pictures.add("a", b"jpeg-a", 10.0, owner="s")
        await tx.pictures.add("b", b"jpeg-b", 10.0, owner="s")
    db = raw_sqlite.connect(store.path)
    with db:
        db.execute("UPDATE pictures SET image = (SELECT image FROM pictures WHERE id = 'a') WHERE id = 'b'")
    db.close()
    with pytest.raises(DecryptionError):
        await store.pictures.get("b")
    assert await store.pictures.get("a") == b"jpeg-a"
