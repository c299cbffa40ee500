"""The outbox table: rows written with the tip that caused them, claimed by one instance at a time
(a lease), delivered by bot.outbox. A payload is sealed together with its row and its sink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.crypto import DecryptionError
from storage.records import OutboxEntry, OutboxItem, OutboxStatus
from storage.repositories import _Repository


_OUTBOX_COLUMNS = "id, sink, payload, status, attempts, next_at, created_at, priority, delivered_at, last_error"


def outbox_row(item_id: str, sink: str) -> str:
    """The associated data of an outbox payload: its row and where it goes, so a row whose sink
    (or target) is edited no longer opens and is never sent there."""
    return f"{item_id}|{sink}"


@dataclass(frozen=True)
class Lane:
    """The rows one delivery lane takes (bot.outbox: a lane per sink, so a hung provider holds up
    only its own rows): those whose sink has one of ``prefixes`` ("telegram" takes
    "telegram:-100123"), or with ``others`` every row whose sink has none of them.

    ``in_order``: a target's row is not due while an earlier row for the same target waits (in
    backoff, or leased by another instance), so officers read a case's alerts in the order they
    were raised (its URGENT never after its "New tip"); when the wait ends they go together,
    urgent first."""

    prefixes: tuple[str, ...]
    others: bool = False
    in_order: bool = False

    def where(self, now: float) -> tuple[str, tuple[Any, ...]]:
        """The SQL added to a query on ``outbox``, and its parameters."""
        tests, params = [], []
        for prefix in self.prefixes:
            tests.append("(sink = ? OR substr(sink, 1, ?) = ?)")
            params += [prefix, len(prefix) + 1, prefix + ":"]
        chosen = " OR ".join(tests) or "1 = 0"
        sql = f" AND {'NOT ' if self.others else ''}({chosen})"
        if self.in_order:
            sql += (
                " AND NOT EXISTS (SELECT 1 FROM outbox AS w WHERE w.sink = outbox.sink AND w.status = 'pending' "
                "AND w.seq < outbox.seq AND (w.next_at > ? OR w.lease_until > ?))"
            )
            params += [now, now]
        return sql, tuple(params)


class SqlOutboxRepository(_Repository):
    def _item(self, r: Any) -> OutboxItem:
        try:
            payload = self._open(r[2], "outbox", "payload", outbox_row(r[0], r[1]))
        except DecryptionError:
            payload = None  # the worker sets it aside as altered; other rows go on
        return OutboxItem(r[0], r[1], payload, OutboxStatus(r[3]), r[4], r[5], r[6], r[7], r[8], r[9])

    async def add(self, item: OutboxItem) -> None:
        await self._db.run(
            f"INSERT INTO outbox ({_OUTBOX_COLUMNS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "(SELECT coalesce(max(seq), 0) + 1 FROM outbox))",
            (
                item.id, item.sink, self._seal(item.payload, "outbox", "payload", outbox_row(item.id, item.sink)), item.status.value,
                item.attempts, item.next_at, item.created_at, item.priority, item.delivered_at, item.last_error,
            ),
        )  # fmt: skip

    async def altered_count(self) -> int:
        """Rows whose payload does not open with their id and sink: edited in the database."""
        rows = await self._all(f"SELECT {_OUTBOX_COLUMNS} FROM outbox")
        return sum(self._item(r).payload is None for r in rows)

    async def due(self, now: float, limit: int = 50, lane: Lane | None = None) -> list[OutboxItem]:
        chosen, params = lane.where(now) if lane is not None else ("", ())
        rows = await self._all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND next_at <= ?{chosen} "
            "ORDER BY priority DESC, seq LIMIT ?",
            (now, *params, limit),
        )
        return [self._item(r) for r in rows]

    async def claim(self, now: float, lease_seconds: float, limit: int = 50, lane: Lane | None = None) -> list[OutboxItem]:
        """Due rows this instance will deliver, leased until ``now + lease_seconds``: no other
        instance claims them meanwhile (rows another is claiming at this instant are skipped, not
        waited for), and if this one dies they are due again when the lease runs out."""
        chosen, params = lane.where(now) if lane is not None else ("", ())
        rows = await self._all(
            f"UPDATE outbox SET lease_until = ? WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' "
            f"AND next_at <= ? AND lease_until <= ?{chosen} ORDER BY priority DESC, seq LIMIT ?{self._db.skip_locked}) "
            f"RETURNING {_OUTBOX_COLUMNS}, seq",
            (now + lease_seconds, now, now, *params, limit),
        )
        rows.sort(key=lambda r: (-r[7], r[10]))  # RETURNING keeps no order: urgent first, then oldest
        return [self._item(r) for r in rows]

    async def extend_lease(self, ids: list[str], until: float) -> int:
        """Keep rows still being delivered leased (a slow provider must not let another instance
        send them too); rows already marked are left alone."""
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        return await self._db.run(
            f"UPDATE outbox SET lease_until = ? WHERE id IN ({marks}) AND status = 'pending' AND lease_until > 0", (until, *ids)
        )

    async def get(self, item_id: str) -> OutboxItem | None:
        row = await self._one(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (item_id,))
        return self._item(row) if row else None

    async def mark_delivered(self, item_id: str, at: float) -> None:
        await self._db.run(
            "UPDATE outbox SET status = 'delivered', delivered_at = ?, last_error = NULL, unreachable = 0, lease_until = 0 WHERE id = ?",
            (at, item_id),
        )

    async def mark_failed(
        self, item_id: str, attempts: int, next_at: float, error: str, dead: bool, unreachable: bool = False
    ) -> None:
        status = OutboxStatus.DEAD if dead else OutboxStatus.PENDING
        await self._db.run(
            "UPDATE outbox SET status = ?, attempts = ?, next_at = ?, last_error = ?, unreachable = ?, lease_until = 0 WHERE id = ?",
            (status.value, attempts, next_at, error[:200], int(unreachable and not dead), item_id),
        )

    async def counts(self) -> dict[OutboxStatus, int]:
        rows = await self._all("SELECT status, count(*) FROM outbox GROUP BY status")
        found = {OutboxStatus(s): n for s, n in rows}
        return {status: found.get(status, 0) for status in OutboxStatus}

    async def next_due_at(self, lane: Lane | None = None) -> float | None:
        # A row leased by an instance is not due before its lease runs out. In a lane that keeps
        # each target's order, a target is next due when its earliest pending row is.
        chosen, params = "", ()
        if lane is not None:
            chosen, params = Lane(lane.prefixes, lane.others).where(0)
            if lane.in_order:
                chosen += (
                    " AND NOT EXISTS (SELECT 1 FROM outbox AS w WHERE w.sink = outbox.sink "
                    "AND w.status = 'pending' AND w.seq < outbox.seq)"
                )
        row = await self._one(
            "SELECT min(CASE WHEN lease_until > next_at THEN lease_until ELSE next_at END) FROM outbox "
            f"WHERE status = 'pending'{chosen}",
            params,
        )
        return row[0] if row else None

    async def delete_delivered_before(self, at: float) -> int:
        return await self._db.run("DELETE FROM outbox WHERE status = 'delivered' AND delivered_at < ?", (at,))

    async def listing(self, statuses: tuple[OutboxStatus, ...], limit: int | None = None) -> list[OutboxEntry]:
        if not statuses:
            return []
        # The payload column is not selected: listing rows never decrypts (or holds) their content.
        rows = await self._all(
            "SELECT id, sink, status, priority, attempts, next_at, created_at, last_error, unreachable FROM outbox "
            f"WHERE status IN ({', '.join('?' * len(statuses))}) ORDER BY priority DESC, seq LIMIT ?",
            (*(s.value for s in statuses), self._db.no_limit if limit is None else limit),
        )
        return [OutboxEntry(r[0], r[1], OutboxStatus(r[2]), r[3], r[4], r[5], r[6], r[7], bool(r[8])) for r in rows]

    async def unreachable(self) -> dict[str, int]:
        rows = await self._all("SELECT sink, count(*) FROM outbox WHERE status = 'pending' AND unreachable = 1 GROUP BY sink")
        return {sink: int(n) for sink, n in rows}

    async def release_unreachable(self, sink: str, now: float) -> int:
        return await self._db.run(
            "UPDATE outbox SET next_at = ? WHERE sink = ? AND status = 'pending' AND unreachable = 1", (now, sink)
        )

    async def requeue_dead(self, now: float, id_prefix: str | None = None) -> int:
        where, params = "", ()
        if id_prefix is not None:
            # A prefix compared as text (not LIKE), so "_" or "%" in it match only themselves.
            where, params = " AND substr(id, 1, ?) = ?", (len(id_prefix), id_prefix)
        return await self._db.run(
            f"UPDATE outbox SET status = 'pending', attempts = 0, next_at = ?, unreachable = 0 WHERE status = 'dead'{where}",
            (now, *params),
        )
