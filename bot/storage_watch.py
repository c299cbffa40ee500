"""How the storage is doing, as the messages of the people writing in find it.

While writes fail (a full disk, a read-only file system, a lock held elsewhere, an I/O error) every
message is answered "try again in a few minutes"; the log says so once a minute with the reason and
how many people got that answer, not once per message (1,302 messages in a disk-full hour must not
become thousands of lines on the very disk that is full). The first tipster message stored again
says "storage recovered" once (not a write that happens to fit, nor a commit with nothing in it,
which would make the lines flap). /healthz reads :attr:`reason` to say why it is degraded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from storage.faults import fault_reason

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between two "still failing" lines
# A failure this recent, with no success since, still makes /healthz degraded: a write check that
# happens to pass (a WAL with room left in it) must not hide that people's messages are refused.
REMEMBER_FOR = 120.0


class StorageWatch:
    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = LOG_EVERY) -> None:
        self._clock = clock
        self._every = every
        self._reason: str | None = None
        self._since = 0.0  # when the current failure began
        self._last_failure = 0.0
        self._logged_at: float | None = None
        self._held = 0  # failures since the last line
        self.refused = 0  # messages answered "try again" since the failure began

    @property
    def reason(self) -> str | None:
        """Why the storage is failing now, or None: the last failure's reason while it is recent
        and nothing succeeded since."""
        if self._reason is None or self._clock() - self._last_failure > REMEMBER_FOR:
            return None
        return self._reason

    def report(self, exc: BaseException, *, message: bool = False) -> str | None:
        """Count ``exc`` when it is a storage failure (and log at most once a minute); its reason,
        or None when it is not one (the caller then logs it as it always did). ``message``: a
        tipster's message was answered "try again" because of it."""
        reason = fault_reason(exc)
        if reason is not None:
            self.failed(reason, message=message)
        return reason

    def failed(self, reason: str, *, message: bool = False) -> None:
        now = self._clock()
        if self._reason is None:
            self._since, self.refused = now, 0
        self._reason, self._last_failure = reason, now
        self.refused += message
        self._held += 1
        if self._logged_at is None or now - self._logged_at >= self._every:
            log.error(
                "storage failing (%s): writes are refused; %d tipster messages answered 'try again' so far, "
                "%d failed writes since the last line (logged once a minute while it lasts)",
                reason, self.refused, self._held,
            )  # fmt: skip
            self._logged_at, self._held = now, 0

    def succeeded(self) -> None:
        """A write committed. Cheap when nothing was failing (called once per message)."""
        if self._reason is None:
            return
        reason, lasted, refused = self._reason, self._clock() - self._since, self.refused
        self._reason, self._logged_at, self._held, self.refused = None, None, 0, 0
        log.warning("storage recovered (was %s for %.0fs; %d tipster messages were answered 'try again')", reason, lasted, refused)
