"""Pictures sent with reports: already stripped of every metadata (bot.pictures), sealed here with
associated data naming their row, so a picture copied into another row does not open.

A picture belongs to its sender's draft (``owner``) until the report is filed, then to the case
(``tip_id``, with no sender). One given while a case already exists (an urgent report, an answer
to officers) has both until the report is sent, so EXIT still erases it.
"""

from __future__ import annotations

from storage.repositories import _Repository

TABLE, COLUMN = "pictures", "image"


class SqlPictureRepository(_Repository):
    async def add(self, picture_id: str, image: bytes, at: float, *, owner: str | None = None, tip_id: str | None = None) -> None:
        assert self._cipher is not None
        sealed = self._cipher.encrypt(image, table=TABLE, column=COLUMN, row=picture_id)
        await self._db.run(
            "INSERT INTO pictures (id, owner, tip_id, created_at, image) VALUES (?, ?, ?, ?, ?)", (picture_id, owner, tip_id, at, sealed)
        )

    async def get(self, picture_id: str) -> bytes | None:
        row = await self._one("SELECT image FROM pictures WHERE id = ?", (picture_id,))
        if row is None:
            return None
        assert self._cipher is not None
        return self._cipher.decrypt(row[0], table=TABLE, column=COLUMN, row=picture_id)

    async def ids_for_tip(self, tip_id: str) -> list[str]:
        rows = await self._all("SELECT id FROM pictures WHERE tip_id = ? ORDER BY created_at, rowid", (tip_id,))
        return [r[0] for r in rows]

    async def count_for_tip(self, tip_id: str) -> int:
        return int((await self._one("SELECT count(*) FROM pictures WHERE tip_id = ?", (tip_id,)))[0])

    async def file(self, owner: str, tip_id: str, *, keep_owner: bool = False) -> int:
        """The sender's draft pictures become the case's, naming the sender no more; how many.
        ``keep_owner``: the case exists before the report is sent (urgent), EXIT may still erase them."""
        if keep_owner:
            sql = "UPDATE pictures SET tip_id = ? WHERE owner = ?"
        else:
            sql = "UPDATE pictures SET tip_id = ?, owner = NULL WHERE owner = ?"
        return await self._db.run(sql, (tip_id, owner))

    async def delete(self, ids: list[str]) -> int:
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        return await self._db.run(f"DELETE FROM pictures WHERE id IN ({marks})", tuple(ids))

    async def delete_owned(self, owner: str) -> int:
        return await self._db.run("DELETE FROM pictures WHERE owner = ?", (owner,))

    async def delete_for_tip(self, tip_id: str) -> int:
        return await self._db.run("DELETE FROM pictures WHERE tip_id = ?", (tip_id,))

    async def purge_orphans(self, before: float) -> int:
        """Pictures nothing leads to any more: a draft's whose sender has no draft (kept or set
        aside), and a case's whose case is gone. Only those older than ``before``, so a picture
        whose draft is being written in the same instant is never taken."""
        return await self._db.run(
            "DELETE FROM pictures WHERE created_at < ? AND ("
            " (tip_id IS NULL AND (owner IS NULL OR (owner NOT IN (SELECT sender FROM drafts)"
            "  AND owner NOT IN (SELECT sender FROM drafts_aside))))"
            " OR (tip_id IS NOT NULL AND owner IS NULL AND tip_id NOT IN (SELECT id FROM tips)))",
            (before,),
        )

    async def count(self) -> int:
        return int((await self._one("SELECT count(*) FROM pictures"))[0])
