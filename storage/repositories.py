"""The SQL repositories, for every backend (see storage.sql). Each is bound to one connection (a
store's reads, or a transaction). Encrypted columns are sealed with associated data naming their
table, column and row, so a value copied into another row does not open. The outbox's are in
storage.outbox, the pictures' in storage.pictures, the pseudonyms' in storage.senders."""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

from storage.crypto import Cipher
from storage.records import AuditEntry, Draft, Followup, Tip, TipStatus
from storage.sql import Db

GENESIS_HASH = "0" * 64

log = logging.getLogger(__name__)


class _Repository:
    def __init__(self, db: Db, cipher: Cipher | None = None) -> None:
        self._db = db
        self._cipher = cipher

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return await self._db.one(sql, params)

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return await self._db.all(sql, params)

    def _seal(self, value: object, table: str, column: str, row: str) -> bytes:
        assert self._cipher is not None
        return self._cipher.encrypt_json(value, table=table, column=column, row=row)

    def _open(self, blob: bytes, table: str, column: str, row: str) -> Any:
        assert self._cipher is not None
        return self._cipher.decrypt_json(blob, table=table, column=column, row=row)


class SqlDraftRepository(_Repository):
    async def get(self, sender: str) -> Draft | None:
        row = await self._one("SELECT state, updated_at, expires_at FROM drafts WHERE sender = ?", (sender,))
        if row is None:
            return None
        return Draft(sender, self._open(row[0], "drafts", "state", sender), row[1], row[2])

    async def save(self, draft: Draft) -> None:
        await self._db.run(
            "INSERT INTO drafts (sender, state, updated_at, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sender) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, "
            "expires_at = excluded.expires_at",
            (draft.sender, self._seal(draft.state, "drafts", "state", draft.sender), draft.updated_at, draft.expires_at),
        )

    async def delete(self, sender: str) -> None:
        await self._db.run("DELETE FROM drafts WHERE sender = ?", (sender,))

    async def expired(self, now: float, limit: int = 100) -> list[str]:
        rows = await self._all("SELECT sender FROM drafts WHERE expires_at <= ? ORDER BY expires_at LIMIT ?", (now, limit))
        return [r[0] for r in rows]

    async def count(self) -> int:
        return int((await self._one("SELECT count(*) FROM drafts"))[0])

    async def set_aside(self, sender: str, at: float) -> None:
        # Moved as stored: the ciphertext stays bound to ("drafts", "state", sender), unread.
        await self._db.run(
            "INSERT INTO drafts_aside (sender, state, updated_at, set_aside_at) SELECT sender, state, updated_at, CAST(? AS DOUBLE PRECISION) FROM drafts WHERE sender = ?",
            (at, sender),
        )
        await self._db.run("DELETE FROM drafts WHERE sender = ?", (sender,))

    async def erase(self, sender: str) -> None:
        await self._db.run("DELETE FROM drafts WHERE sender = ?", (sender,))
        await self._db.run("DELETE FROM drafts_aside WHERE sender = ?", (sender,))
        await self._db.run("DELETE FROM pictures WHERE owner = ?", (sender,))

    async def set_aside_count(self) -> int:
        return int((await self._one("SELECT count(*) FROM drafts_aside"))[0])

    async def purge_set_aside_before(self, at: float) -> int:
        return await self._db.run("DELETE FROM drafts_aside WHERE set_aside_at < ?", (at,))


TIP_COLUMNS = (
    "id, case_number, status, sender, channel, language, urgent, minor, complete, contact_ok, receipt_hash, "
    "answers, contact, close_reason, created_at, updated_at, closed_at, seal"
)


ALTERED_SEAL = "altered"  # never a valid seal (not hex of 64): keeps an edited tip flagged


def tip_seal(cipher: Cipher, tip_id: str, plain: tuple[object, ...]) -> str:
    """The keyed seal over a tip's plain columns (everything but the encrypted ones), in
    ``TIP_COLUMNS`` order: case number, status, sender, channel, language, the four flags, the
    receipt hash and the times. A swapped receipt hash or a flipped flag no longer matches."""
    return cipher.row_seal("tips", tip_id, plain)


def tip_plain_columns(row: Any) -> tuple[object, ...]:
    return (*row[1:11], *(float(t) if t is not None else None for t in row[14:17]))


class SqlTipRepository(_Repository):
    def _tip(self, row: Any) -> Tip:
        tip_id = row[0]
        return Tip(
            id=tip_id,
            case_number=row[1],
            status=TipStatus(row[2]),
            sender=row[3],
            channel=row[4],
            language=row[5],
            urgent=bool(row[6]),
            minor=bool(row[7]),
            complete=bool(row[8]),
            contact_ok=bool(row[9]),
            receipt_hash=row[10],
            answers=self._open(row[11], "tips", "answers", tip_id),
            contact_address=self._open(row[12], "tips", "contact", tip_id) if row[12] is not None else None,
            close_reason=self._open(row[13], "tips", "close_reason", tip_id) if row[13] is not None else None,
            created_at=row[14],
            updated_at=row[15],
            closed_at=row[16],
            altered=row[17] != tip_seal(self._cipher, tip_id, tip_plain_columns(row)),
        )

    async def get(self, tip_id: str) -> Tip | None:
        row = await self._one(f"SELECT {TIP_COLUMNS} FROM tips WHERE id = ?", (tip_id,))
        return self._tip(row) if row else None

    async def by_case(self, case_number: str) -> Tip | None:
        row = await self._one(f"SELECT {TIP_COLUMNS} FROM tips WHERE case_number = ?", (case_number.strip().upper(),))
        return self._tip(row) if row else None

    async def urgent_since(self, sender: str, since: float) -> int:
        """Urgent cases this sender opened since then (withdrawn ones too: that is the point)."""
        row = await self._one("SELECT count(*) FROM tips WHERE sender = ? AND urgent = 1 AND created_at >= ?", (sender, since))
        return int(row[0])

    async def by_receipt_hash(self, receipt_hash: str) -> Tip | None:
        """The tip a receipt opens; never one whose row was edited (a receipt hash swapped in from
        another case must not open it)."""
        row = await self._one(f"SELECT {TIP_COLUMNS} FROM tips WHERE receipt_hash = ?", (receipt_hash,))
        tip = self._tip(row) if row else None
        if tip is not None and tip.altered:
            log.error("tip %s: its row was edited outside Tipline; a receipt look-up was refused", tip.case_number)
            return None
        return tip

    async def list(self, statuses: tuple[TipStatus, ...] | None = None, limit: int | None = 50) -> list[Tip]:
        """Urgent first, then minors, then newest; ``limit=None`` for all of them."""
        where, params = "", ()
        if statuses:
            where = f"WHERE status IN ({', '.join('?' * len(statuses))})"
            params = tuple(s.value for s in statuses)
        rows = await self._all(
            f"SELECT {TIP_COLUMNS} FROM tips {where} ORDER BY urgent DESC, minor DESC, created_at DESC LIMIT ?",
            (*params, self._db.no_limit if limit is None else limit),
        )
        return [self._tip(r) for r in rows]

    async def save(self, tip: Tip) -> None:
        contact = self._seal(tip.contact_address, "tips", "contact", tip.id) if tip.contact_address else None
        reason = self._seal(tip.close_reason, "tips", "close_reason", tip.id) if tip.close_reason else None
        row = (
            tip.id, tip.case_number, tip.status.value, tip.sender, tip.channel, tip.language,
            int(tip.urgent), int(tip.minor), int(tip.complete), int(tip.contact_ok), tip.receipt_hash,
            self._seal(tip.answers, "tips", "answers", tip.id), contact, reason,
            float(tip.created_at), float(tip.updated_at), float(tip.closed_at) if tip.closed_at is not None else None,
        )  # fmt: skip
        await self._db.run(
            # An upsert, not INSERT OR REPLACE: REPLACE deletes the row first, which cascades to its
            # follow-ups and would silently drop another tip holding the same case number/receipt.
            f"INSERT INTO tips ({TIP_COLUMNS}) VALUES ({', '.join('?' * 18)}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in TIP_COLUMNS.split(", ")[1:]),
            # A tip read back altered stays altered when saved again (an /ack must not launder an edit).
            (*row, ALTERED_SEAL if tip.altered else tip_seal(self._cipher, tip.id, tip_plain_columns(row))),
        )

    async def delete(self, tip_id: str) -> None:
        await self._db.run("DELETE FROM tips WHERE id = ?", (tip_id,))

    async def next_case_number(self, year: int) -> str:
        """Short, sequential per year: 26-0001. Only officers see it; the tipster gets a receipt."""
        name = f"case:{year}"
        await self._db.run(
            "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = counters.value + 1", (name,)
        )
        value = (await self._one("SELECT value FROM counters WHERE name = ?", (name,)))[0]
        return f"{year % 100:02d}-{value:04d}"


class SqlFollowupRepository(_Repository):
    async def add(self, followup: Followup) -> None:
        await self._db.run(
            "INSERT INTO followups (id, tip_id, author, body, created_at, read_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                followup.id, followup.tip_id, followup.author,
                self._seal(followup.text, "followups", "body", followup.id), followup.created_at, followup.read_at,
            ),
        )  # fmt: skip

    async def for_tip(self, tip_id: str) -> list[Followup]:
        rows = await self._all(
            "SELECT id, author, body, created_at, read_at FROM followups WHERE tip_id = ? ORDER BY created_at, rowid", (tip_id,)
        )
        return [Followup(r[0], tip_id, r[1], self._open(r[2], "followups", "body", r[0]), r[3], r[4]) for r in rows]

    async def mark_read(self, ids: list[str], at: float) -> None:
        await self._db.run_many("UPDATE followups SET read_at = ? WHERE id = ? AND read_at IS NULL", [(at, i) for i in ids])

    async def delete_for_tip(self, tip_id: str) -> None:
        await self._db.run("DELETE FROM followups WHERE tip_id = ?", (tip_id,))

    async def delete(self, ids: list[str]) -> None:
        await self._db.run_many("DELETE FROM followups WHERE id = ?", [(i,) for i in ids])


class SqlProcessedRepository(_Repository):
    """Provider message ids as keyed hashes (never the raw MessageSid or update_id), and the replies
    given to each, cached apart for the short time a provider may retry."""

    def _key(self, key: str) -> str:
        assert self._cipher is not None
        return self._cipher.lookup_hash("provider-id", key)

    async def replies_for(self, key: str) -> list[dict[str, Any]] | None:
        """None: never handled. A list: handled, with the replies given (empty once they are no
        longer cached: the person had them the first time)."""
        hashed = self._key(key)
        row = await self._one(
            "SELECT c.replies FROM processed p LEFT JOIN cached_replies c ON c.key = p.key WHERE p.key = ?", (hashed,)
        )
        if row is None:
            return None
        return self._open(row[0], "cached_replies", "replies", hashed) if row[0] is not None else []

    async def add(self, key: str, replies: list[dict[str, Any]], at: float, sender: str | None = None) -> None:
        hashed = self._key(key)
        await self._db.run("INSERT INTO processed (key, at) VALUES (?, ?)", (hashed, at))
        await self._db.run(
            "INSERT INTO cached_replies (key, sender, replies, at) VALUES (?, ?, ?, ?)",
            (hashed, sender, self._seal(replies, "cached_replies", "replies", hashed), at),
        )

    async def forget_replies(self, sender: str) -> int:
        return await self._db.run("DELETE FROM cached_replies WHERE sender = ?", (sender,))

    async def purge_replies_before(self, at: float) -> int:
        return await self._db.run("DELETE FROM cached_replies WHERE at < ?", (at,))

    async def purge_before(self, at: float) -> int:
        return await self._db.run("DELETE FROM processed WHERE at < ?", (at,))


class SqlAuditRepository(_Repository):
    """Append-only, hash-chained: each row's hash covers its content and the previous hash, keyed
    from the key ring (``Cipher.chain_hash``) so the chain cannot be rebuilt without the keys."""

    def _chain(self, previous: str, record: str) -> str:
        assert self._cipher is not None
        return self._cipher.chain_hash(previous, record)

    async def append(self, officer: str, tip_id: str, action: str, at: float) -> AuditEntry:
        await self._db.lock("audit")  # one chain: appends of several instances take turns
        last = await self._one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        # float(): the column is REAL, so an int time would read back as 5.0 and no longer hash to 5.
        entry = AuditEntry(seq, float(at), officer, tip_id, action, prev, "")
        entry.hash = self._chain(prev, entry.record())
        await self._db.run(
            "INSERT INTO audit (seq, at, officer, tip_id, action, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry.seq, entry.at, entry.officer, entry.tip_id, entry.action, entry.prev_hash, entry.hash),
        )
        # The head is kept apart so that deleting the newest rows is detected too.
        await self._db.run(
            "INSERT INTO meta (name, value) VALUES ('audit_head', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (f"{entry.seq}:{entry.hash}",),
        )
        return entry

    async def head(self) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE name = 'audit_head'")
        return row[0] if row else None

    async def verify(self) -> list[str]:
        """Problems in the chain: an edited row, a deleted row, a broken link. Empty when intact."""
        problems: list[str] = []
        previous, expected_seq = GENESIS_HASH, 1
        entries = await self.entries()
        for entry in entries:
            if entry.seq != expected_seq:
                problems.append(f"audit row {expected_seq} is missing (next is {entry.seq})")
            if entry.prev_hash != previous:
                problems.append(f"audit row {entry.seq} does not follow the row before it")
            if self._chain(entry.prev_hash, entry.record()) != entry.hash:
                problems.append(f"audit row {entry.seq} was altered")
            previous, expected_seq = entry.hash, entry.seq + 1
        head = await self.head()
        last = f"{entries[-1].seq}:{entries[-1].hash}" if entries else None
        if head != last:
            problems.append(f"the newest audit rows are missing (head {head}, last row {last})")
        before = await self._one("SELECT value FROM meta WHERE name = 'audit_before_keyed'")
        if before is not None:
            problems.append(before[0])
        return problems

    async def entries(self) -> list[AuditEntry]:
        rows = await self._all("SELECT seq, at, officer, tip_id, action, prev_hash, hash FROM audit ORDER BY seq")
        return [AuditEntry(*r) for r in rows]


class SqlReceiptAttemptRepository(_Repository):
    async def record_failure(self, sender: str, at: float) -> None:
        await self._db.run("INSERT INTO receipt_failures (sender, at) VALUES (?, ?)", (sender, at))
        # Keep the table small: a day of history is more than the lock-out window needs.
        await self._db.run("DELETE FROM receipt_failures WHERE at < ?", (at - 86400,))

    async def failures_since(self, sender: str, since: float) -> int:
        return int((await self._one("SELECT count(*) FROM receipt_failures WHERE sender = ? AND at >= ?", (sender, since)))[0])

    async def failures_total_since(self, since: float) -> int:
        # No index on ``at`` alone: the table holds at most a day of failures, which the global
        # ceiling keeps to a few thousand rows, so a scan stays cheap.
        return int((await self._one("SELECT count(*) FROM receipt_failures WHERE at >= ?", (since,)))[0])

    async def last_failure_at(self) -> float | None:
        row = await self._one("SELECT max(at) FROM receipt_failures")
        return None if row is None or row[0] is None else float(row[0])


class SqlMessageRefRepository(_Repository):
    """Provider message ids of a conversation (Telegram), kept encrypted so the conversation can
    be deleted from the person's phone; dropped once used or after Telegram's 48-hour limit."""

    async def add(self, sender: str, refs: list[str], at: float) -> None:
        await self._db.lock(f"message-refs:{sender}")  # read, merge, write: one instance at a time
        current = await self.get(sender)
        merged = current + [r for r in refs if r not in current]
        await self._db.run(
            "INSERT INTO message_refs (sender, refs, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (sender) DO UPDATE SET refs = excluded.refs, updated_at = excluded.updated_at",
            (sender, self._seal(merged, "message_refs", "refs", sender), at),
        )

    async def get(self, sender: str) -> list[str]:
        row = await self._one("SELECT refs FROM message_refs WHERE sender = ?", (sender,))
        return list(self._open(row[0], "message_refs", "refs", sender)) if row else []

    async def delete(self, sender: str) -> None:
        await self._db.run("DELETE FROM message_refs WHERE sender = ?", (sender,))

    async def purge_before(self, at: float) -> int:
        return await self._db.run("DELETE FROM message_refs WHERE updated_at < ?", (at,))


def utc_year(timestamp: float) -> int:
    return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).year
