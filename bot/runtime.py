"""Everything a running Tipline owns, opened in order and closed in reverse.

``Runtime.open`` is used by ``chat`` and by the web app's lifespan: key ring → database → engine →
outbox worker → channels. It opens an existing line (``bot.line``; ``chat`` alone may make one). Settings are parsed once (``main.py``) and passed in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

from bot.alerting import AlertComposer
from bot.channels.console import ConsoleSink
from bot.engine import Engine
from bot.i18n import Catalogues
from bot.outbox import OutboxWorker, Sink
from bot.pictures import PictureReceiver
from bot.pseudonyms import upkeep
from bot.retention import purge
from bot.settings import Settings
from bot.tipster_delivery import TipsterSink
from handlers.flow import FlowError, validate_flow
from handlers.turn import ConversationConfig
from bot.line import load_keyring, missing
from storage.crypto import Cipher
from storage.data_dir import DataDirLock, OneProcess
from storage.backends import open_store
from storage.interfaces import Store
from storage.opening import StorageError
from storage.sqlite import DB_FILENAME
from storage.sqlite_checks import note_unclean_stop

log = logging.getLogger(__name__)
SUMMARY_EVERY = 300.0  # seconds between two "messages handled" lines


def conversation_config(settings: Settings, sinks: tuple[str, ...]) -> ConversationConfig:
    return ConversationConfig(
        draft_timeout_seconds=settings.draft_timeout_minutes * 60,
        answer_window_seconds=settings.answer_window_minutes * 60,
        support_line=settings.support_line,
        alert_sinks=sinks,
        officer_language=settings.officers.language,
        officer_timezone=settings.timezone,
        receipt_failures_global_per_hour=settings.receipt_failures_per_hour,
        urgent_alerts_per_hour=settings.urgent_alerts_per_hour,
        cached_reply_seconds=settings.retention.cached_reply_hours * 3600,
        pictures_per_report=settings.pictures.per_report,
        picture_max_bytes=settings.pictures.max_bytes,
    )


@dataclass
class Runtime:
    settings: Settings
    cipher: Cipher
    store: Store
    catalogues: Catalogues
    engine: Engine
    composer: AlertComposer
    worker: OutboxWorker
    tipster_sink: TipsterSink
    tasks: list[asyncio.Task] = field(default_factory=list)
    lock: DataDirLock | None = None  # shared: keygen --rotate waits for this process to stop
    alone: OneProcess | None = None  # SQLite: no second serve, chat or purge on this data dir

    @classmethod
    async def open(cls, settings: Settings, *, role: str = "serve", create: bool = False) -> Runtime:
        """``create``: make the key ring and the database if there are none (``chat`` only, a local
        try-out). Otherwise a line that is not all there stops the start, before anything is
        written (``bot.line``): ``serve`` never starts a new, empty line on its own."""
        catalogues = Catalogues.load()
        problems = catalogues.problems()
        if problems:
            raise FlowError("message catalogues are incomplete: " + "; ".join(problems[:5]))
        validate_flow(known_keys=catalogues.keys())
        problem = None if create else missing(settings)
        if problem is not None:
            raise StorageError(problem)
        lock = DataDirLock(Path(settings.data_dir), exclusive=False)  # also makes the directory 0700 first
        try:
            alone = None if settings.database else OneProcess(Path(settings.data_dir), role)
        except BaseException:
            lock.release()
            raise
        try:
            if alone is not None:
                note_unclean_stop(Path(settings.data_dir) / DB_FILENAME, alone.previous)
            cipher = Cipher(load_keyring(settings, create=create))
            store = await open_store(Path(settings.data_dir), cipher, settings.database, create=create)
            try:
                await upkeep(store, cipher, settings.pseudonym_epoch_hours, time.time())
            except BaseException:
                await store.close()
                raise
        except BaseException:
            if alone is not None:
                alone.release()
            lock.release()
            raise
        composer = AlertComposer(store, catalogues, settings.officers.language, settings.officers.full_details)
        tipster_sink = TipsterSink(store, catalogues)
        worker = OutboxWorker(store, {"console": ConsoleSink(composer), "tipster": tipster_sink})
        config = conversation_config(settings, ("console",))
        engine = Engine(store, cipher, catalogues, config, on_alerts=worker.wake, pictures=PictureReceiver(settings.pictures))
        runtime = cls(settings, cipher, store, catalogues, engine, composer, worker, tipster_sink, lock=lock, alone=alone)
        worker.allowed = runtime.sends_to
        return runtime

    def sends_to(self, sink: str) -> bool:
        """Whether this deployment sends to ``sink``: an officer target it alerts, or a sink whose
        address is not in the row (a tipster's reply goes to the tip's own sealed contact)."""
        prefix = sink.partition(":")[0]
        return sink in self.engine.config.alert_sinks or getattr(self.worker.sinks.get(prefix), "addressed_by_payload", False)

    def route_alerts(self, sinks: dict[str, Sink], targets: tuple[str, ...]) -> None:
        """Channels add their sinks; officer alerts go to their targets (the console when none)."""
        self.worker.sinks.update(sinks)
        targets = targets or ("console",)
        # Update alerts (an urgent case filling in) go to the sinks that want them, not to phones.
        updates = tuple(t for t in targets if getattr(self.worker.sinks.get(t.split(":", 1)[0]), "wants_updates", True))
        self.engine.config = replace(self.engine.config, alert_sinks=targets, update_sinks=updates)

    def start_background(self, *, retention: bool = False) -> None:
        """The outbox worker, the draft-expiry sweeper and (in ``serve``) the daily retention job."""
        self.tasks.append(asyncio.create_task(self.worker.run(), name="outbox"))
        self.tasks.append(asyncio.create_task(self._sweep(), name="draft-expiry"))
        # A new pepper within a minute of the boundary (sooner for epochs shorter than 4 minutes).
        upkeep_every = min(60.0, self.settings.pseudonym_epoch_hours * 3600 / 4)
        self.tasks.append(asyncio.create_task(self._pseudonym_upkeep(upkeep_every), name="pseudonym-upkeep"))
        if retention:
            self.tasks.append(asyncio.create_task(self._retention(), name="retention"))

    async def _retention(self, every: float = 86400.0) -> None:
        while True:
            try:
                removed = await purge(self.store, self.settings, time.time())
                log.info("retention: %s", ", ".join(f"{k} {v}" for k, v in removed.items()))
            except Exception:  # noqa: BLE001 - try again tomorrow; an error is logged
                log.exception("retention pass failed")
            await asyncio.sleep(every)

    async def _pseudonym_upkeep(self, every: float = 60.0) -> None:
        """The current epoch's pepper created, the old ones destroyed, every ``every`` seconds."""
        while True:
            await asyncio.sleep(every)
            try:
                await upkeep(self.store, self.cipher, self.settings.pseudonym_epoch_hours, time.time())
            except Exception:  # noqa: BLE001 - the previous epoch stays valid; the next pass retries
                log.exception("pseudonym upkeep failed")

    async def _sweep(self, every: float = 30.0, checkpoint_every: float = 3600.0) -> None:
        """Expire drafts (and drop cached replies past their window) every ``every`` seconds; cut
        the write-ahead log every ``checkpoint_every`` (expired and filed drafts leave versions
        in it too, not only an EXIT, which cuts it at once)."""
        last_checkpoint = last_summary = time.monotonic()
        counted = self.engine.handled
        while True:
            if time.monotonic() - last_summary >= SUMMARY_EVERY:
                # One INFO line now and then instead of one per message (those are DEBUG).
                if self.engine.handled != counted:
                    log.info("%d messages handled in the last %.0f min", self.engine.handled - counted, (time.monotonic() - last_summary) / 60)
                last_summary, counted = time.monotonic(), self.engine.handled
            try:
                await self.engine.expire_due()
                if time.monotonic() - last_checkpoint >= checkpoint_every:
                    await self.store.checkpoint()
                    last_checkpoint = time.monotonic()
            except Exception:  # noqa: BLE001 - keep sweeping; the next pass retries
                log.exception("draft expiry pass failed")
            await asyncio.sleep(every)

    async def stop_background(self) -> None:
        """Stop the worker (after its current delivery) and the periodic jobs."""
        self.worker.stop()
        for task in reversed(self.tasks):
            # The worker finishes its current delivery when stopped; the sweeper is just cancelled.
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=5 if task.get_name() == "outbox" else 0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self.tasks.clear()

    async def close(self) -> None:
        await self.stop_background()
        await self.store.close()
        if self.alone is not None:
            self.alone.release()
        if self.lock is not None:
            self.lock.release()
