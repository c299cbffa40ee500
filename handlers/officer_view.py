"""How a tip reads for officers: their vocabulary, their language, their clock.

A tipster sees "You are: I saw it (witness)"; an officer reads "Reporter: witness". Every label,
answer, state and age here comes from the ``officer.*`` keys of the catalogues, in the officers'
language (``TIPLINE_OFFICERS__LANGUAGE``), and times are local (``TIPLINE_TIMEZONE``).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from bot.i18n import Catalogues
from handlers.flow import BY_ID, StepKind
from storage.records import Tip

# Kept with a tip's answers when its sender raised more urgent cases in an hour than are alerted.
REPEATED_FLAG = "repeated"
# Kept with a tip's answers when the person wrote in neither supported language.
LANGUAGE_UNKNOWN_FLAG = "language_unknown"

HEADLINE_PLACE_CHARS = 40  # the place as a phone's notification shows it: the start of what was typed


def field(catalogues: Catalogues, language: str, step_id: str) -> str:
    """The officers' label of an answer: "Reporter", "Contact", "Place"…"""
    return catalogues.text(language, f"officer.field.{step_id}")


def answer(catalogues: Catalogues, language: str, step_id: str, value: object) -> str:
    """A recorded answer in officers' words: "victim (self)", "do not contact"; what the person
    typed as they typed it; "-" when skipped."""
    if value in (None, "", []):
        return catalogues.text(language, "summary.skipped")
    if BY_ID[step_id].kind is StepKind.CHOICE:
        key = f"officer.value.{step_id}.{value}"
        return catalogues.text(language, key) if key in catalogues.messages[language] else str(value)
    if isinstance(value, list):
        return " / ".join(str(v) for v in value)
    return str(value)


def labelled(catalogues: Catalogues, language: str, label: str, value: str) -> str:
    """"Reporter: witness"; French puts a space before the colon ("Signalé par : témoin")."""
    return catalogues.text(language, "officer.label", field=label, value=value)


def line(catalogues: Catalogues, language: str, step_id: str, value: object) -> str:
    return labelled(catalogues, language, field(catalogues, language, step_id), answer(catalogues, language, step_id, value))


def contact_line(catalogues: Catalogues, language: str, tip: Tip) -> str:
    return line(catalogues, language, "contact", "yes" if tip.contact_ok else "no")


def status(catalogues: Catalogues, language: str, tip: Tip) -> str:
    return catalogues.text(language, f"officer.status.{tip.status.value}")


def language_shown(catalogues: Catalogues, language: str, tip: Tip) -> str:
    """The tip's language named in the officers' language; "unknown — interpreter needed" when the
    person wrote in neither supported language."""
    if tip.answers.get(LANGUAGE_UNKNOWN_FLAG):
        return catalogues.text(language, "officer.language.unknown")
    key = f"officer.language.{tip.language}"
    return catalogues.text(language, key) if key in catalogues.messages[language] else tip.language


def channel_line(catalogues: Catalogues, language: str, tip: Tip) -> str:
    t = catalogues.text
    channel = f"officer.channel.{tip.channel}"
    shown = t(language, channel) if channel in catalogues.messages[language] else tip.channel
    return " · ".join(
        (
            labelled(catalogues, language, t(language, "officer.field.channel"), shown),
            labelled(catalogues, language, t(language, "officer.field.language"), language_shown(catalogues, language, tip)),
        )
    )


def flags(catalogues: Catalogues, language: str, tip: Tip, *, urgent: bool = True) -> list[str]:
    """URGENT / MINOR INVOLVED / REPEATED, as officers read them (``urgent=False`` leaves URGENT out
    where the title already says it)."""
    # An edited row's flags may be false: say so before anything else (python main.py tips audit).
    found = [catalogues.text(language, "alert.flag.altered")] if tip.altered else []
    if urgent and tip.urgent:
        found.append(catalogues.text(language, "alert.flag.urgent"))
    if tip.minor:
        found.append(catalogues.text(language, "alert.flag.minor"))
    if tip.answers.get(REPEATED_FLAG):
        found.append(catalogues.text(language, "alert.flag.repeated"))
    return found


def headline(catalogues: Catalogues, language: str, tip: Tip) -> str:
    """The first line of an alert, read at a glance: flags, then the place, then the case —
    "URGENT · NOW · MINOR INVOLVED · Motel Lune, Laval — 26-0001"."""
    shown = flags(catalogues, language, tip)
    if tip.answers.get("when") == "now":
        shown.insert(int(tip.urgent) + int(tip.altered), catalogues.text(language, "alert.flag.now"))
    place = " ".join(str(tip.answers.get("where") or "").split())
    if len(place) > HEADLINE_PLACE_CHARS:
        place = place[: HEADLINE_PLACE_CHARS - 1].rstrip() + "…"
    parts = shown + ([place] if place else [])
    return (" · ".join(parts) + " — " if parts else "") + tip.case_number


def when(catalogues: Catalogues, language: str, timestamp: float, now: float, zone: tzinfo) -> str:
    """Local time and how long ago: "2026-12-06 07:03 (12 min ago)"."""
    local = datetime.fromtimestamp(timestamp, zone).strftime("%Y-%m-%d %H:%M")
    return f"{local} ({age(catalogues, language, now - timestamp)})"


def age(catalogues: Catalogues, language: str, seconds: float) -> str:
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return catalogues.text(language, "officer.age.now")
    if minutes < 60:
        return catalogues.text(language, "officer.age.minutes", n=minutes)
    if minutes < 48 * 60:
        return catalogues.text(language, "officer.age.hours", n=minutes // 60)
    return catalogues.text(language, "officer.age.days", n=minutes // (24 * 60))
