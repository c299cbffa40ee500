"""Message catalogues: one gettext ``.po`` file per language in ``locales/``.

The catalogues are monolingual (msgid is a stable key such as ``danger.question``), the form that
translation tools such as Weblate and Poedit call "monolingual gettext". Every key and every
placeholder must exist in every language; ``Catalogues.problems`` lists what does not, and start-up
refuses to run with a broken catalogue.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DEFAULT_LANGUAGE = "en"


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@dataclass(frozen=True)
class Catalogues:
    messages: dict[str, dict[str, str]]  # language -> key -> text

    @classmethod
    def load(cls, directory: Path = LOCALES_DIR) -> Catalogues:
        messages: dict[str, dict[str, str]] = {}
        for path in sorted(directory.glob("*.po")):
            with path.open("rb") as handle:
                catalogue = read_po(handle, locale=None)
            messages[path.stem] = {str(m.id): str(m.string) for m in catalogue if m.id}
        if DEFAULT_LANGUAGE not in messages:
            raise RuntimeError(f"no {DEFAULT_LANGUAGE}.po catalogue in {directory}")
        return cls(messages)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.messages)

    def keys(self) -> set[str]:
        return set(self.messages[DEFAULT_LANGUAGE])

    def problems(self) -> list[str]:
        """Keys missing or empty in a language, and placeholders that differ from English."""
        found = []
        reference = self.messages[DEFAULT_LANGUAGE]
        for language, table in self.messages.items():
            for key in sorted(set(reference) | set(table)):
                if not table.get(key):
                    found.append(f"{language}: {key} is missing or empty")
                elif key not in reference:
                    found.append(f"{language}: {key} is not in {DEFAULT_LANGUAGE}")
                elif placeholders(table[key]) != placeholders(reference[key]):
                    found.append(f"{language}: {key} has placeholders {sorted(placeholders(table[key]))}")
        return found

    def text(self, language: str, key: str, **values: object) -> str:
        table = self.messages.get(language) or self.messages[DEFAULT_LANGUAGE]
        template = table.get(key) or self.messages[DEFAULT_LANGUAGE][key]
        return template.format(**values) if values else template

    def words(self, language: str, key: str) -> tuple[str, ...]:
        """A word list (``words.*`` keys): the entries of ``msgstr`` separated by "|", stripped, empty
        entries and repeats dropped, in catalogue order. Unlike ``text`` there is no fallback to
        English: a language without the list (or an unknown language) has no words, which is what a
        matcher that consults every language needs."""
        raw = self.messages.get(language, {}).get(key, "")
        return tuple(dict.fromkeys(entry.strip() for entry in raw.split("|") if entry.strip()))
