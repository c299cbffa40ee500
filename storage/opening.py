"""What every backend does with a database, whatever engine holds it: the repositories over one
connection, binding the database to its key ring, sealing old rows for integrity once, and
re-encrypting every value after a key rotation. All through ``storage.sql.Db``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from storage.crypto import Cipher, DecryptionError, KeyRingError, unkeyed_chain_hash
from storage.outbox import SqlOutboxRepository, outbox_row
from storage.pictures import SqlPictureRepository
from storage.records import AuditEntry
from storage.repositories import (
    GENESIS_HASH,
    TIP_COLUMNS,
    SqlAuditRepository,
    SqlDraftRepository,
    SqlFollowupRepository,
    SqlMessageRefRepository,
    SqlProcessedRepository,
    SqlReceiptAttemptRepository,
    SqlTipRepository,
    tip_plain_columns,
    tip_seal,
)
from storage.senders import SqlPepperRepository, SqlSenderRepository
from storage.sql import Db

log = logging.getLogger(__name__)

# Every encrypted column, as (table, key column, blob column, SQL of the row its associated data
# names): used by re-encryption on rotation. An outbox payload is bound to its row and its sink.
ENCRYPTED_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("drafts", "sender", "state", "sender"),
    ("tips", "id", "answers", "id"),
    ("tips", "id", "contact", "id"),
    ("tips", "id", "close_reason", "id"),
    ("followups", "id", "body", "id"),
    ("cached_replies", "key", "replies", "key"),
    ("outbox", "id", "payload", "id || '|' || sink"),
    ("message_refs", "sender", "refs", "sender"),
    ("pseudonym_peppers", "epoch", "pepper", "CAST(epoch AS TEXT)"),
    ("pictures", "id", "image", "id"),
)


class StorageError(Exception):
    """The database cannot be used as it is (e.g. written by a newer Tipline)."""


@dataclass
class SqlRepositories:
    drafts: SqlDraftRepository
    tips: SqlTipRepository
    followups: SqlFollowupRepository
    processed: SqlProcessedRepository
    outbox: SqlOutboxRepository
    audit: SqlAuditRepository
    receipt_attempts: SqlReceiptAttemptRepository
    message_refs: SqlMessageRefRepository
    peppers: SqlPepperRepository
    senders: SqlSenderRepository
    pictures: SqlPictureRepository
    db: Db  # for the store's own upkeep (re-encryption); handlers use the repositories

    @classmethod
    def over(cls, db: Db, cipher: Cipher) -> SqlRepositories:
        return cls(
            SqlDraftRepository(db, cipher),
            SqlTipRepository(db, cipher),
            SqlFollowupRepository(db, cipher),
            SqlProcessedRepository(db, cipher),
            SqlOutboxRepository(db, cipher),
            SqlAuditRepository(db, cipher),
            SqlReceiptAttemptRepository(db),
            SqlMessageRefRepository(db, cipher),
            SqlPepperRepository(db, cipher),
            SqlSenderRepository(db, cipher),
            SqlPictureRepository(db, cipher),
            db,
        )


INTEGRITY_VERSION = "1"  # meta 'integrity': rows sealed, outbox bound to sinks, audit chain keyed


async def prepare(db: Db, cipher: Cipher, *, bind: bool = True) -> None:
    """At open, inside one transaction: bind the database to its key ring (only with ``bind``:
    otherwise an unbound one is refused), seal it for integrity if it never was, and write one
    row, so a database this process cannot write (a read-only file, directory, volume or server)
    stops the start instead of answering every message with an error."""
    await check_key(db, cipher, bind=bind)
    await seal_for_integrity(db, cipher)
    await db.run(
        "INSERT INTO meta (name, value) VALUES ('opened_at', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (f"{time.time():.0f}",),
    )


async def check_key(db: Db, cipher: Cipher, *, bind: bool = True) -> None:
    """Bind the database to its key ring on first use; refuse a key ring that is not its own."""
    row = await db.one("SELECT value FROM meta WHERE name = 'key_fingerprint'")
    if row is None:
        if not bind:
            # Only init (or a local chat) makes a line; a database never bound to a key ring is
            # an init that did not finish, not one to adopt with whatever keys are at hand.
            raise StorageError(
                "the database was never bound to a key ring (an init that did not finish?): "
                "if it is a new line, remove it (SQLite: the file; PostgreSQL: the schema) and run: python main.py init"
            )
        await db.run("INSERT INTO meta (name, value) VALUES ('key_fingerprint', ?)", (cipher.fingerprint(),))
    elif row[0] != cipher.fingerprint():
        raise KeyRingError(
            "the key ring does not match this database (the data was written with other keys); "
            "point TIPLINE_KEYS_FILE (or TIPLINE_KEYRING) at the key ring made for this database"
        )


async def seal_for_integrity(db: Db, cipher: Cipher) -> None:
    """Once per database (a new one, or one written before rows were sealed): seal every tip's
    plain columns, bind every outbox payload to its sink, and re-chain the audit log under the key.
    The meta flag makes it once: afterwards a missing seal is an edit, not an old row. An old audit
    chain that was already broken is re-chained but its problems are kept (``audit_before_keyed``)
    and reported by every ``tips audit`` from then on."""
    if await db.one("SELECT value FROM meta WHERE name = 'integrity'") is not None:
        return
    tips = await db.all(f"SELECT {TIP_COLUMNS} FROM tips")
    for row in tips:
        await db.run("UPDATE tips SET seal = ? WHERE id = ?", (tip_seal(cipher, row[0], tip_plain_columns(row)), row[0]))
    items = await db.all("SELECT id, sink, payload FROM outbox")
    for item_id, sink, blob in items:
        try:
            plain = cipher.decrypt(blob, table="outbox", column="payload", row=item_id)
        except DecryptionError:
            continue  # already unreadable: left as it is, it will be set aside as altered
        sealed = cipher.encrypt(plain, table="outbox", column="payload", row=outbox_row(item_id, sink))
        await db.run("UPDATE outbox SET payload = ? WHERE id = ?", (sealed, item_id))
    await _rechain_audit(db, cipher)
    await db.run("INSERT INTO meta (name, value) VALUES ('integrity', ?)", (INTEGRITY_VERSION,))
    if tips or items:
        log.info("database sealed for integrity: %d tips, %d outbox rows", len(tips), len(items))


async def _rechain_audit(db: Db, cipher: Cipher) -> None:
    rows = await db.all("SELECT seq, at, officer, tip_id, action, prev_hash, hash FROM audit ORDER BY seq")
    entries = [AuditEntry(*r) for r in rows]
    if not entries:
        return
    broken, previous = 0, GENESIS_HASH
    for entry in entries:
        broken += entry.prev_hash != previous or unkeyed_chain_hash(entry.prev_hash, entry.record()) != entry.hash
        previous = entry.hash
    previous = GENESIS_HASH
    for entry in entries:
        entry.prev_hash, entry.hash = previous, cipher.chain_hash(previous, entry.record())
        await db.run("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (entry.prev_hash, entry.hash, entry.seq))
        previous = entry.hash
    await db.run(
        "INSERT INTO meta (name, value) VALUES ('audit_head', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (f"{entries[-1].seq}:{entries[-1].hash}",),
    )
    if broken:
        note = f"{broken} audit rows did not verify before the chain was keyed (rows up to {entries[-1].seq})"
        await db.run("INSERT INTO meta (name, value) VALUES ('audit_before_keyed', ?)", (note,))
        log.error("audit: %s", note)


async def reencrypt_all(store: Any) -> int:
    """Re-seal every encrypted value still under an old key with the active key, one table per
    transaction. ``store``: a backend whose ``transaction()`` yields ``SqlRepositories``."""
    cipher: Cipher = store.cipher
    changed = 0
    for table, key_column, column, bound_to in ENCRYPTED_COLUMNS:
        async with store.transaction() as tx:
            rows = await tx.db.all(f"SELECT {key_column}, {bound_to}, {column} FROM {table} WHERE {column} IS NOT NULL")
            for row_key, row, blob in rows:
                if not cipher.needs_reencryption(blob):
                    continue
                plain = cipher.decrypt(blob, table=table, column=column, row=row)
                sealed = cipher.encrypt(plain, table=table, column=column, row=row)
                await tx.db.run(f"UPDATE {table} SET {column} = ? WHERE {key_column} = ?", (sealed, row_key))
                changed += 1
    return changed
