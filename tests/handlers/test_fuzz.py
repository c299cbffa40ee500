"""Property tests: any sequence of messages from several senders never raises, always gets a
reply, and never shows one sender anything another sender typed."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.engine import Engine
from bot.i18n import Catalogues
from bot.messages import InboundMessage
from bot.rate_limit import RateLimiter
from handlers.turn import ConversationConfig
from storage.crypto import Cipher, KeyRing
from storage.sqlite import SqliteStore
from tests.conftest import Clock

CATALOGUES = Catalogues.load()
CIPHER = Cipher(KeyRing.generate())
WORDS = ["exit", "QUIT", "quitter", "Stop", "arrêt", "ARRET", "help", "Aide", "lang", "LANGUE", "back", "Retour",
         "skip", "passer", "0", "done", "FINI", "add", "AJOUT 123-456-789-012", "check", "suivi 000", "info", "/list"]  # fmt: skip
DIGITS = [str(n) for n in range(0, 10)] + ["１", "2.", "#3", " 4 "]
nasty_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # any Unicode: emoji, RTL, controls…
    max_size=300,
)
accented_word = st.sampled_from(WORDS).map(lambda w: w.replace("e", "é") if len(w) > 4 else w)
message = st.one_of(nasty_text, st.sampled_from(WORDS), accented_word, st.sampled_from(DIGITS), st.text(max_size=5000))
script = st.lists(st.tuples(st.integers(min_value=0, max_value=2), message, st.booleans()), min_size=1, max_size=40)


def marker(sender: int) -> str:
    return f"zq{sender}marker"


async def _run(steps: list[tuple[int, str, bool]]) -> None:
    clock = Clock()
    with tempfile.TemporaryDirectory() as directory:
        store = await SqliteStore.open(Path(directory), CIPHER)
        try:
            engine = Engine(store, CIPHER, CATALOGUES, ConversationConfig(), clock=clock, rate_limiter=RateLimiter(burst=10**6))
            for sender, text, marked in steps:
                typed = f"{text} {marker(sender)}" if marked else text
                replies = await engine.handle(InboundMessage("sms", f"sender-{sender}", typed))
                assert replies, f"no reply to {typed!r}"
                shown = "\n".join(r.text for r in replies)
                for other in range(3):
                    if other != sender:
                        assert marker(other) not in shown
                clock.advance(7)
            clock.advance(3600)
            await engine.expire_due()  # expiry of whatever state the script left never raises
        finally:
            await store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(script)
def test_any_message_sequence_gets_replies_and_never_leaks_between_senders(steps: list[tuple[int, str, bool]]) -> None:
    asyncio.run(_run(steps))
