"""The rules of ``test_conversation_model`` about the words people use (issue 10), mixed into its
state machine: danger phrases of every locale at any point, exits misspelt, and free text that
must be kept. Each rule checks what must hold right after it; the machine's invariants run too.

The inputs come from the catalogues (``model_support.DANGER_PHRASES``, ``EXIT_TYPOS``), so a
phrase a translator adds is walked here the day it is added.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

from tests.handlers.model_support import EXIT_TYPOS, danger_text, fold_word, free_text, preview


class VocabularyRules:
    """Mixed into ``ConversationMachine``; uses its ``tipster``, ``where``, ``say``, ``typed``,
    ``run``, ``store`` and ``exit_and_check``."""

    def _tip(self: Any, tip_id: str | None) -> Any:
        return self.run(self.store.tips.get(tip_id)) if tip_id else None

    @rule(who=st.integers(0, 2), pick=st.integers(0, 2**16))
    def say_danger(self: Any, who: int, pick: int) -> None:
        """A danger phrase, wherever the sender is: a report (new or open) is urgent at once, with
        its case saved; an ADD or an answer to officers makes the sent case urgent."""
        t = self.tipster(who)
        text = danger_text(pick)
        before = self.where(t)
        replies = self.say(t, text)
        after = self.where(t)
        said = f"{preview(text)} (replies {[r.key for r in replies]})"
        if before.mode in ("idle", "report") and after.mode == "report":
            state = after.state
            assert state["answers"].get("danger") == "yes", f"{said} at {before.step or 'the start'} did not mark the report urgent"
            tip = self._tip(state.get("tip_id"))
            assert tip is not None and tip.urgent, f"{said}: the urgent report has no urgent case"
        if before.mode in ("add", "answer"):
            tip = self._tip(before.state.get("tip_id"))
            if tip is not None and tip.status not in ("closed", "withdrawn"):
                assert tip.urgent, f"{said} in {before.mode} did not make case {tip.case_number} urgent"

    @rule(who=st.integers(0, 2), pick=st.integers(0, 2**16), confirm=st.sampled_from(("1", "yes", "oui", "Oui!", "2", "non")))
    def misspell_exit(self: Any, who: int, pick: int, confirm: str) -> None:
        """A misspelt exit word is never stored as an answer: in a report it erases or is asked
        about ("Stop and erase? 1 Yes 2 No"); yes then erases, no keeps it as text."""
        t = self.tipster(who)
        typo = EXIT_TYPOS[pick % len(EXIT_TYPOS)]
        typo = (typo, typo.upper(), typo.capitalize(), f"{typo}!")[(pick // 997) % 4]
        before = self.where(t)
        replies = self.say(t, typo)
        after = self.where(t)
        if before.mode != "report":
            return
        asked = "exit.confirm" in [r.key for r in replies]
        assert after.mode == "idle" or asked, f"{preview(typo)} at {before.step} was neither an exit nor asked about"
        if after.mode == "report":
            # (Counted, not searched: an earlier "No, I did not mean to stop" rightly kept it.)
            def stored(state: dict) -> int:
                return fold_word(json.dumps(state["answers"], ensure_ascii=False)).count(fold_word(typo.rstrip("!")))

            assert stored(after.state) == stored(before.state), f"{preview(typo)} at {before.step} was stored as an answer"
        if asked:
            if confirm in ("1", "yes", "oui", "Oui!"):
                self.exit_and_check(t, confirm)
            else:
                self.say(t, confirm)

    @rule(who=st.integers(0, 2), text=free_text)
    def free_text_is_kept(self: Any, who: int, text: str) -> None:
        """Whatever a person types in a report is kept somewhere in it (an answer, details, the
        place, a line waiting for "Stop and erase?"), unless the report ends with that message."""
        t = self.tipster(who)
        before = self.where(t)
        typed = self.typed(t, text)
        replies = self.say(t, typed)
        after = self.where(t)
        if before.mode == "report" and after.mode == "report":
            kept = json.dumps(after.state, ensure_ascii=False)
            assert self.typed(t, "").strip() in kept, (
                f"{preview(typed)} at {before.step} was lost (replies {[r.key for r in replies]})"
            )
