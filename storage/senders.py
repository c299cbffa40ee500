"""Tipster pseudonyms that expire: the epoch peppers at rest, and the rows named by a pseudonym.

* ``SqlPepperRepository`` keeps one random pepper per epoch in ``pseudonym_peppers``, sealed
  with the key ring's AES key (so it works the same with a key file or a read-only
  ``TIPLINE_KEYRING``), creates the current epoch's on demand and deletes every other one but the
  previous epoch's. ``secure_delete`` overwrites the deleted row; the store then truncates the WAL
  (``SqliteStore.checkpoint``) so no earlier copy of the page survives there either.
* ``SqlSenderRepository`` moves a tipster's rows from the previous epoch's pseudonym to the
  current one on first contact (so at most two epochs are ever live), and forgets the sender of a
  filed tip once the per-sender urgent-alert limit no longer looks at it.
"""

from __future__ import annotations

import logging

from storage.crypto import Cipher, DecryptionError, EpochPeppers, new_epoch_pepper
from storage.sql import Db
from storage.repositories import ALTERED_SEAL, TIP_COLUMNS, _Repository, tip_plain_columns, tip_seal

log = logging.getLogger(__name__)

FORGOTTEN = ""  # tips.sender once nothing needs it (never a pseudonym: those are 64 hex digits)


class SqlPepperRepository(_Repository):
    async def rotate(self, current: int) -> int:
        """Create the current epoch's pepper if missing; destroy all but it and the previous one.
        Returns how many peppers were destroyed."""
        assert self._cipher is not None
        await self._db.lock("pseudonym-peppers")  # instances rotating at once create one pepper
        destroyed = await self._db.run("DELETE FROM pseudonym_peppers WHERE epoch NOT IN (?, ?)", (current, current - 1))
        if await self._one("SELECT 1 FROM pseudonym_peppers WHERE epoch = ?", (current,)) is None:
            sealed = self._cipher.seal_epoch_pepper(current, new_epoch_pepper())
            await self._db.run("INSERT INTO pseudonym_peppers (epoch, pepper) VALUES (?, ?)", (current, sealed))
        return destroyed

    async def alive(self, current: int) -> EpochPeppers | None:
        """The current and previous epoch's peppers, opened; None when the current one is missing."""
        assert self._cipher is not None
        rows = await self._all("SELECT epoch, pepper FROM pseudonym_peppers WHERE epoch IN (?, ?)", (current, current - 1))
        peppers = {int(epoch): self._cipher.open_epoch_pepper(int(epoch), blob) for epoch, blob in rows}
        return EpochPeppers(current, peppers) if current in peppers else None

    async def epochs(self) -> list[int]:
        return [int(r[0]) for r in await self._all("SELECT epoch FROM pseudonym_peppers ORDER BY epoch")]


async def load_latest_peppers(db: Db, cipher: Cipher) -> None:
    """At open: the newest epoch kept is taken as the current one (the upkeep creates it, and
    moves it on with the clock), so a second connection names tipsters as the running bot does."""
    repo = SqlPepperRepository(db, cipher)
    epochs = await repo.epochs()
    alive = await repo.alive(epochs[-1]) if epochs else None
    if alive is not None:
        cipher.use_epoch_peppers(alive)


class SqlSenderRepository(_Repository):
    async def rekey(self, old: str, new: str, at: float) -> int:
        """Rows found under ``old`` (the previous epoch's pseudonym) now go by ``new``: the draft
        (re-sealed: its associated data names the sender), anything set aside, receipt failures
        (the lock-out goes on), message refs and the sender of tips still inside the urgent-alert
        window. Returns how many rows moved. When both names have a draft (two messages crossed
        the boundary), the current one is kept and the older is set aside, never interpreted."""
        if old == new:
            return 0
        moved = await self._rekey_draft(old, new, at)
        moved += await self._db.run("UPDATE pictures SET owner = ? WHERE owner = ?", (new, old))
        for table in ("drafts_aside", "receipt_failures", "cached_replies"):
            moved += await self._db.run(f"UPDATE {table} SET sender = ? WHERE sender = ?", (new, old))
        moved += await self._rekey_refs(old, new, at)
        moved += await self._reseal_tips("sender = ?", (old,), new)
        return moved

    async def _rekey_draft(self, old: str, new: str, at: float) -> int:
        row = await self._one("SELECT state, updated_at, expires_at FROM drafts WHERE sender = ?", (old,))
        if row is None:
            return 0
        clash = await self._one("SELECT 1 FROM drafts WHERE sender = ?", (new,)) is not None
        try:
            state = None if clash else self._open(row[0], "drafts", "state", old)
        except DecryptionError:
            state = None
        if state is None:
            # Moved aside as stored (still bound to the old name, which nobody can open a draft
            # by any more); EXIT under the new name still erases it.
            await self._db.run(
                "INSERT INTO drafts_aside (sender, state, updated_at, set_aside_at) VALUES (?, ?, ?, ?)", (new, row[0], row[1], at)
            )
        else:
            await self._db.run(
                "INSERT INTO drafts (sender, state, updated_at, expires_at) VALUES (?, ?, ?, ?)",
                (new, self._seal(state, "drafts", "state", new), row[1], row[2]),
            )
        await self._db.run("DELETE FROM drafts WHERE sender = ?", (old,))
        return 1

    async def _rekey_refs(self, old: str, new: str, at: float) -> int:
        row = await self._one("SELECT refs, updated_at FROM message_refs WHERE sender = ?", (old,))
        if row is None:
            return 0
        refs = list(self._open(row[0], "message_refs", "refs", old))
        current = await self._one("SELECT refs FROM message_refs WHERE sender = ?", (new,))
        merged = [*(self._open(current[0], "message_refs", "refs", new) if current else []), *refs]
        await self._db.run("DELETE FROM message_refs WHERE sender = ?", (old,))
        await self._db.run(
            "INSERT INTO message_refs (sender, refs, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (sender) DO UPDATE SET refs = excluded.refs, updated_at = excluded.updated_at",
            (new, self._seal(list(dict.fromkeys(merged)), "message_refs", "refs", new), max(at, float(row[1]))),
        )
        return 1

    async def forget_tip_senders(self, created_before: float) -> int:
        """Tips filed before then keep no sender pseudonym: the only use of ``tips.sender`` is the
        per-sender urgent-alert limit, which looks back one hour. Returns how many were cleared."""
        return await self._reseal_tips("sender != ? AND created_at < ?", (FORGOTTEN, created_before), FORGOTTEN)

    async def _reseal_tips(self, where: str, params: tuple[object, ...], sender: str) -> int:
        """Set ``tips.sender`` and re-seal the row (the seal covers it). A row whose seal did not
        match before stays flagged as edited: changing the sender must not launder an edit."""
        assert self._cipher is not None
        rows = await self._all(f"SELECT {TIP_COLUMNS} FROM tips WHERE {where}", params)
        for row in rows:
            intact = row[17] == tip_seal(self._cipher, row[0], tip_plain_columns(row))
            changed = (*row[:3], sender, *row[4:])
            seal = tip_seal(self._cipher, row[0], tip_plain_columns(changed)) if intact else ALTERED_SEAL
            await self._db.run("UPDATE tips SET sender = ?, seal = ? WHERE id = ?", (sender, seal, row[0]))
        return len(rows)
