"""Per-sender flood control, in memory and before any write, so a flood does not grow the database.

A token bucket per sender pseudonym: ``burst`` messages at once, then one every ``1/rate``
seconds. The first message over the limit gets one calm "slow down"; the rest of the flood gets
silence, except the occasional message a refilled token lets through (answered normally). The
warning is given again only after the sender calmed down (the bucket half full again). Idle
buckets are dropped, so memory follows active senders only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    ALLOW = "allow"
    WARN = "warn"  # over the limit: say "slow down" once
    DROP = "drop"  # still over the limit: stay silent


@dataclass
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


class RateLimiter:
    def __init__(self, burst: int = 20, rate: float = 0.5, max_senders: int = 100_000) -> None:
        self.burst = burst
        self.rate = rate
        self.max_senders = max_senders
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, sender: str, now: float) -> Verdict:
        bucket = self._buckets.pop(sender, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[sender] = bucket  # most recently used last
        self._evict(now)
        if bucket.tokens >= self.burst / 2:
            bucket.warned = False  # calm again: a new flood deserves a new warning
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Verdict.ALLOW
        if bucket.warned:
            return Verdict.DROP
        bucket.warned = True
        return Verdict.WARN

    def rekey(self, old: str, new: str) -> None:
        """The sender's pseudonym changed with the epoch: its bucket follows (unless it has one)."""
        bucket = self._buckets.pop(old, None)
        if bucket is not None and new not in self._buckets:
            self._buckets[new] = bucket

    def _evict(self, now: float) -> None:
        """Drop buckets that are full again (idle senders) and cap the table's size."""
        idle_after = self.burst / self.rate
        while self._buckets:
            sender, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) > self.max_senders or now - oldest.updated >= idle_after:
                del self._buckets[sender]
            else:
                break

    def __len__(self) -> int:
        return len(self._buckets)
