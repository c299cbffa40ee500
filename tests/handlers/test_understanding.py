"""Understanding what people type (handlers.understanding): the word lists live in the catalogues,
every locale has every list, and the phrasings the conversation review saw rejected are understood,
while the near misses are not."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.i18n import Catalogues
from handlers.understanding import (
    ANSWER_GROUPS,
    ANSWER_LISTS,
    CONTROL_LISTS,
    DANGER,
    DANGER_ALONE,
    DONT_KNOW,
    KIND_LABOUR,
    KIND_OTHER,
    KIND_SEXUAL,
    NEAR_MISS,
    NO,
    REQUIRED_LISTS,
    ROLE_AFFECTED,
    ROLE_UNSAID,
    ROLE_WITNESS,
    WHEN_EARLIER,
    WHEN_NOW,
    WHEN_TODAY,
    WHEN_WEEK,
    YES,
    Certainty,
    Control,
    Vocabulary,
    distance,
    missing_lists,
    required_lists,
    tokens,
)
from handlers.words import fold

CATALOGUES = Catalogues.load()
VOCABULARY = Vocabulary.from_catalogues(CATALOGUES)
LANGUAGES = CATALOGUES.languages
YES_NO = ANSWER_GROUPS["yes_no"]
ROLE = ANSWER_GROUPS["role"]
KIND = ANSWER_GROUPS["kind"]
WHEN = ANSWER_GROUPS["when"]

CERTAIN, UNSURE = Certainty.CERTAIN, Certainty.UNSURE


def answer(text: str, keys: tuple[str, ...], language: str | None = None) -> str | None:
    return VOCABULARY.answer(text, keys, language=language)


# --- the lists are in the catalogues ---------------------------------------------------------------


def test_every_locale_has_every_list_and_the_catalogues_stay_clean() -> None:
    assert set(LANGUAGES) >= {"en", "fr"}
    assert CATALOGUES.problems() == []
    assert missing_lists(CATALOGUES) == []
    for language in LANGUAGES:
        for key in required_lists(LANGUAGES):
            assert CATALOGUES.words(language, key), f"{language}: {key} is empty"
            assert VOCABULARY.entries(language, key), f"{language}: {key} has no readable entry"


def test_required_lists_cover_every_answer_control_number_and_language() -> None:
    assert set(ANSWER_LISTS) | set(CONTROL_LISTS.values()) <= set(REQUIRED_LISTS)
    assert {f"words.number.{n}" for n in range(1, 5)} <= set(REQUIRED_LISTS)
    assert required_lists(["en", "fr"])[-2:] == ("words.language.en", "words.language.fr")
    assert all(key.startswith("words.") for key in required_lists(LANGUAGES))


def test_a_missing_or_blank_list_is_reported() -> None:
    broken = Catalogues({"en": {"words.yes": "yes"}, "fr": {"words.yes": " | \u200b | "}})
    problems = missing_lists(broken)
    assert "fr: words.yes is missing or empty" in problems  # only separators and invisible characters
    assert "en: words.no is missing or empty" in problems
    assert "en: words.yes is missing or empty" not in problems


def test_words_splits_on_bars_strips_and_has_no_fallback() -> None:
    catalogues = Catalogues({"en": {"k": " yes | y|| yes |ok yes ", "t": "Text"}, "fr": {"t": "Texte"}})
    assert catalogues.words("en", "k") == ("yes", "y", "ok yes")
    assert catalogues.words("fr", "k") == ()  # no English fallback for a word list
    assert catalogues.words("xx", "k") == ()
    assert catalogues.text("xx", "t") == "Text"  # text() still falls back as before


def test_the_matcher_holds_no_words_of_its_own() -> None:
    """Swap every word for made-up ones: the real words stop working and the made-up ones work."""
    made_up = {key: "" for key in required_lists(["en"])}
    made_up.update(
        {
            "words.yes": "zorp|zorp zorp zap",
            "words.no": "blick",
            "words.exit": "vanquo|quoxxit",
            "words.done": "flurbed",
            "words.help": "hulp",
            "words.danger": "glorp now",
            "words.danger_alone": "klaxo",
            "words.number.1": "unko",
        }
    )
    vocabulary = Vocabulary.from_catalogues(Catalogues({"en": {k: v or "qqq" + k for k, v in made_up.items()}}))
    assert vocabulary.answer("zorp", YES_NO) == YES and vocabulary.answer("yes", YES_NO) is None
    assert vocabulary.answer("unko", YES_NO) == YES and vocabulary.answer("one", YES_NO) is None
    assert vocabulary.control("vanquo") == (Control.EXIT, CERTAIN) and vocabulary.control("exit") is None
    assert vocabulary.control("quoxxti") == (Control.EXIT, UNSURE)  # fuzzy, over the list's own words
    assert vocabulary.control("flurbed") == (Control.DONE, CERTAIN) and vocabulary.control("done") is None
    assert vocabulary.control("hulp") == (Control.HELP, CERTAIN) and vocabulary.control("help") is None
    assert vocabulary.danger("oh glorp now!") and not vocabulary.danger("help me")
    assert vocabulary.danger("klaxo") and not vocabulary.danger("911")


def test_lists_of_one_question_never_share_an_entry_in_any_language() -> None:
    """Within a question (and among control words) an entry means one thing, whatever the language."""
    groups = {**ANSWER_GROUPS, "controls": tuple(CONTROL_LISTS.values())}
    for name, keys in groups.items():
        owner: dict[tuple[str, ...], str] = {}
        for language in LANGUAGES:
            for key in keys:
                for entry in VOCABULARY.entries(language, key):
                    assert owner.setdefault(entry, key) == key, f"{name}: {entry} is in {owner[entry]} and {key}"


def test_help_alone_is_never_a_danger_phrase_and_near_misses_are_not_control_words() -> None:
    controls = {e for lang in LANGUAGES for key in CONTROL_LISTS.values() for e in VOCABULARY.entries(lang, key)}
    for language in LANGUAGES:
        danger = VOCABULARY.entries(language, DANGER) | VOCABULARY.entries(language, DANGER_ALONE)
        assert not danger & VOCABULARY.entries(language, CONTROL_LISTS[Control.HELP])
        assert not VOCABULARY.entries(language, NEAR_MISS) & controls


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize(
    ("label_key", "keys", "expected"),
    [
        ("answer.yes", YES_NO, YES),
        ("answer.no", YES_NO, NO),
        ("answer.unsure", YES_NO, DONT_KNOW),
        ("answer.dont_know", YES_NO, DONT_KNOW),
        ("role.affected", ROLE, ROLE_AFFECTED),
        ("role.witness", ROLE, ROLE_WITNESS),
        ("role.unsaid", ROLE, ROLE_UNSAID),
        ("kind.sexual", KIND, KIND_SEXUAL),
        ("kind.labour", KIND, KIND_LABOUR),
        ("kind.other", KIND, KIND_OTHER),
        ("when.now", WHEN, WHEN_NOW),
        ("when.today", WHEN, WHEN_TODAY),
        ("when.week", WHEN, WHEN_WEEK),
        ("when.earlier", WHEN, WHEN_EARLIER),
    ],
)
def test_typing_an_option_label_picks_that_option(language: str, label_key: str, keys: tuple[str, ...], expected: str) -> None:
    assert answer(CATALOGUES.text(language, label_key), keys) == expected


# --- reading a message ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Arrêt!! ", ("arret",)),
        ("Don't know", ("dont", "know")),
        ("don’t  KNOW.", ("dont", "know")),
        ("aidez-moi", ("aidez", "moi")),
        ("C'est À MOI", ("cest", "a", "moi")),
        ("n/a", ("n", "a")),
        ("yesss!!!", ("yes",)),
        ("no no no", ("no",)),
        ("???", ("?",)),
        ("👍🏽👍", ("👍",)),
        ("🤷\u200d♀️", ("🤷",)),
        ("1️⃣", ("1",)),
        ("１", ("1",)),
        ("#2)", ("2",)),
        ("", ()),
        ("   ...   ", (".",)),
        ("\u202egizmo\u200b", ("gizmo",)),
    ],
)
def test_tokens(text: str, expected: tuple[str, ...]) -> None:
    assert tokens(text) == expected


@pytest.mark.parametrize("text", ["Arrêt!", "  OUI  svp ", "Témoin", "Je ne sais PAS.", "LANGUE", "«cette semaine»"])
def test_tokens_fold_like_handlers_words_fold(text: str) -> None:
    assert " ".join(tokens(text)) == fold(text)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("exti", "exit", 1), ("qiutter", "quitter", 1), ("fnii", "fini", 1), ("dne", "done", 1), ("quiter", "quitter", 1),
     ("finsihed", "finished", 1), ("exit", "exit", 0), ("cancel", "parcel", 2), ("abc", "abcdef", 3), ("", "ab", 2)],
)  # fmt: skip
def test_distance_counts_a_transposition_as_one(a: str, b: str, expected: int) -> None:
    assert distance(a, b, 2) == min(expected, 3)


# --- answers ----------------------------------------------------------------------------------------

YES_NO_TABLE = {
    YES: ["yes", "Yes!", "oui", "OUI", "oui!!", "y", "Y", "yeah", "yep", "ya", "yup", "sure", "ouais", "wi", "one", "un",
          "1", "1.", "#1", "(1)", "1️⃣", "１", "1 yes", "yes 1", "1. Yes he's here", "👍", "✅", "👍🏽", "Oui svp",
          "yes he is here", "yes its me", "ok yes", "yesss", "Bien sûr", "première"],
    NO: ["no", "non", "n", "nope", "nah", "No thanks", "❌", "👎", "2", "two", "deux", "2 no", "no 2", "nobody",
         "personne", "no he is not here", "non merci", "pas du tout"],
    DONT_KNOW: ["idk", "dunno", "dont know", "don't know", "i don't know", "maybe", "unsure", "not sure", "Not sure.",
                "i'm not sure", "i have no idea", "no idea", "3 no idea", "3", "three", "trois", "je sais pas", "sais pas",
                "chais pas", "jsp", "pas sûr", "pas sur", "pas certaine", "pas certain", "peut-être", "peut etre",
                "je ne sais pas", "🤷", "🤷‍♀️", "not sure at all"],
}  # fmt: skip
ROLE_TABLE = {
    ROLE_AFFECTED: ["me", "Me.", "myself", "victim", "victime", "moi", "c'est moi", "cest moi", "it's me",
                    "me and my sister", "it is happening to me", "c'est à moi que cela arrive", "1", "un"],
    ROLE_WITNESS: ["witness", "A witness", "témoin", "Témoin", "i saw it", "neighbour", "my neighbor", "voisine",
                   "hotel staff", "coworker", "a friend", "not me", "it's not me", "pas moi", "j'ai vu"],
    ROLE_UNSAID: ["prefer not to say", "rather not say", "no comment", "je préfère ne pas le dire", "je préfère pas"],
}  # fmt: skip
KIND_TABLE = {
    KIND_SEXUAL: ["sex", "prostitution", "escort", "pimp", "forced sex", "sex work", "Sexual exploitation",
                  "exploitation sexuelle", "sexe", "salon de massage"],
    KIND_LABOUR: ["work", "farm", "farm work", "forced work", "job", "wages", "passport taken", "travail",
                  "travail forcé", "ferme", "pas payé", "they took my passport"],
    KIND_OTHER: ["other", "autre", "both", "les deux", "something else", "not sure", "je sais pas", "3"],
}  # fmt: skip
WHEN_TABLE = {
    WHEN_NOW: ["now", "right now", "happening now", "Now!", "tonight", "currently", "maintenant", "ce soir",
               "en ce moment", "présentement", "every night", "still happening", "depuis 3 mois", "since march",
               "tous les soirs", "1"],
    WHEN_TODAY: ["today", "this morning", "this afternoon", "aujourd'hui", "ce matin", "earlier today", "a few hours ago"],
    WHEN_WEEK: ["yesterday", "hier", "last night", "this week", "cette semaine", "a few days ago", "2 days ago",
                "hier soir", "friday", "3"],
    WHEN_EARLIER: ["last week", "last month", "last year", "months ago", "earlier", "before", "avant",
                   "la semaine passée", "le mois dernier", "il y a longtemps", "4", "four", "quatre"],
}  # fmt: skip


def _cases(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(text, key) for key, texts in table.items() for text in texts]


@pytest.mark.parametrize(("text", "expected"), _cases(YES_NO_TABLE))
def test_yes_no_dont_know(text: str, expected: str) -> None:
    assert answer(text, YES_NO) == expected


@pytest.mark.parametrize(("text", "expected"), _cases(ROLE_TABLE))
def test_role(text: str, expected: str) -> None:
    assert answer(text, ROLE) == expected


@pytest.mark.parametrize(("text", "expected"), _cases(KIND_TABLE))
def test_kind(text: str, expected: str) -> None:
    assert answer(text, KIND) == expected


@pytest.mark.parametrize(("text", "expected"), _cases(WHEN_TABLE))
def test_when(text: str, expected: str) -> None:
    assert answer(text, WHEN) == expected


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("1 no", YES_NO),  # the number and the word disagree
        ("yes no", YES_NO),
        ("yes and no", YES_NO),
        ("ok", YES_NO),  # "I'm ok" or "okay, noted": never a Yes to danger
        ("4", YES_NO),  # out of range
        ("12", YES_NO),
        ("right now", YES_NO),  # an answer to another question
        ("not sure", (YES, NO)),  # a yes/no question without "don't know": not a Yes
        ("no idea", (YES, NO)),  # the longest entry is "no idea", not offered: not a No
        ("y a des filles", YES_NO),  # one-letter entries only as whole replies
        ("2 girls", YES_NO),  # a leading number is only a confirmation
        ("one of them is 15", YES_NO),
        ("yes he is here and the other man, the tall one, is outside", YES_NO),  # long: exact only
        ("not now", WHEN),  # negated
        ("pas maintenant", WHEN),
        ("3 hours ago", WHEN),  # the number says "this week", the words say "today"
        ("depuis hier", WHEN),  # both ends, two buckets
        ("no sex", KIND),
        ("sex and farm work", KIND),
        ("my friend is the victim", ROLE),
        ("leamington ontario, greenhouse on county rd 14", ROLE),
        ("", YES_NO),
        ("   ", YES_NO),
        ("yes", ()),
    ],
)
def test_answers_not_guessed(text: str, keys: tuple[str, ...]) -> None:
    assert answer(text, keys) is None


def test_the_persons_language_goes_first_and_exact_beats_tolerant() -> None:
    assert answer("oui", YES_NO, language="en") == YES
    assert answer("yes", YES_NO, language="fr") == YES
    assert answer("pas sûr", YES_NO, language="en") == DONT_KNOW  # exact French beats any English reading
    assert answer("oui please", YES_NO, language="en") == YES


def test_answer_accepts_any_list_key_in_option_order() -> None:
    assert answer("one", (NO, YES)) == NO  # "one" is the first offered option, whatever it is
    assert answer("zzz", ("words.no_such_list",)) is None
    assert VOCABULARY.answer("oui", YES_NO, "fr") == YES  # the language may be given by position


def test_other_word_lists_of_the_catalogues_are_read_too_but_numbers_only_pick_options() -> None:
    lists = {key: "qqq" + key for key in required_lists(["en"])}
    lists.update({"words.yes": "yes", "words.no": "no", "words.thanks": "thanks|thank you|merci|🙏", "words.number.1": "one"})
    vocabulary = Vocabulary.from_catalogues(Catalogues({"en": lists}))
    assert vocabulary.answer("Thank you!!", ("words.thanks",)) == "words.thanks"
    assert vocabulary.answer("ok thanks", ("words.thanks",)) == "words.thanks"
    assert vocabulary.answer("no", ("words.thanks",)) is None  # an answer to something else
    assert vocabulary.answer("thanks for everything you do", ("words.thanks",)) == "words.thanks"
    assert vocabulary.answer("1", ("words.thanks",)) is None  # not a numbered question
    assert vocabulary.answer("one", ("words.thanks",)) is None
    assert vocabulary.answer("1", ("words.thanks",), numbered=True) == "words.thanks"
    assert vocabulary.answer("1", (YES, NO)) == YES


# --- control words ----------------------------------------------------------------------------------

CONTROL_TABLE: list[tuple[str, Control, Certainty]] = [
    # exact, in every case and spelling the review saw working
    *[(t, Control.EXIT, CERTAIN) for t in ["EXIT", "exit.", "QUITTER", "arrêt", "ARRET!", "stop", "Stop!!", "quit"]],
    # the review's rejected exits: now understood
    *[(t, Control.EXIT, CERTAIN) for t in ["Exit please", "end", "cancel", "annuler", "effacer", "delete", "bye",
                                           "sortir", "🛑", "au revoir", "i want to stop", "je veux quitter",
                                           "please stop", "quit stop", "stop stop stop", "unsubscribe", "Erase it"]],
    *[(t, Control.EXIT, UNSURE) for t in ["exti", "quiter", "quitt", "qiutter", "Exti!", "arreter svp", "je veux quiter",
                                          "i want to stop now", "stop please now ok", "near the bus stop", "delet",
                                          "efface tout ca", "stpo"]],
    *[(t, Control.DONE, CERTAIN) for t in ["done", "Done!", "DONE.", "fini!", "terminé", "finished", "that's all",
                                           "thats all", "c'est tout", "send", "envoyer", "fin", "the end", "ok that's it"]],
    *[(t, Control.DONE, UNSURE) for t in ["dne", "doen", "fnii", "finsihed", "finishd", "termine ok merci",
                                          "that's all, bye", "ok im done now"]],
    *[(t, Control.HELP, CERTAIN) for t in ["help", "HELP!", "help!!!", "aide", "info", "?", "???", "what"]],
    *[(t, Control.BACK, CERTAIN) for t in ["back", "go back", "retour", "oops", "erreur"]],
    *[(t, Control.SKIP, CERTAIN) for t in ["skip", "passer", "0", "none", "nothing", "n/a", "N/A", "rien", "pass"]],
    *[(t, Control.LANG, CERTAIN) for t in ["lang", "LANG", "langue", "LANGUE", "french", "francais svp", "français",
                                           "je parle pas anglais", "anglais", "english"]],
    *[(t, Control.LANG, UNSURE) for t in ["can i have french", "english please now"]],
]  # fmt: skip


@pytest.mark.parametrize(("text", "control", "certainty"), CONTROL_TABLE)
def test_control(text: str, control: Control, certainty: Certainty) -> None:
    assert VOCABULARY.control(text) == (control, certainty)


@pytest.mark.parametrize(
    "text",
    [
        "and",  # "end" has 3 letters: no fuzziness
        "yet",
        "dine",  # real words close to DONE / EXIT
        "gone",
        "bone",
        "one",
        "dont",
        "quite",
        "quiet",
        "shop",
        "step",
        "edit",
        "exist",
        "find her",
        "the nail shop",
        "cancer",
        "parcel",
        "summit",
        "soir",  # 2 edits from "sortir": too many for a word of 4 letters
        "hier soir",
        "ce soir",
        "bus stop on main st",  # long: an exit word inside a description is not an exit
        "he told her to stop but she could not leave the house",
        "I am done with this man, he took my passport and my phone",
        "2",  # digits are never fuzzy
        "10",
        "help me",  # danger, not HELP
        "helps",
        "next week",  # SKIP is exact only
        "he came back",  # BACK is exact only
        "nothing happened to me",
        "",
        "!!!",
    ],
)
def test_not_a_control(text: str) -> None:
    assert VOCABULARY.control(text) is None


def test_naming_the_current_language_is_help_and_another_is_lang() -> None:
    assert VOCABULARY.control("i don't understand", language="en") == (Control.HELP, CERTAIN)
    assert VOCABULARY.control("i don't understand", language="fr") == (Control.LANG, CERTAIN)
    assert VOCABULARY.control("je comprends pas", language="en") == (Control.LANG, CERTAIN)
    assert VOCABULARY.control("je comprends pas", language="fr") == (Control.HELP, CERTAIN)
    assert VOCABULARY.control("english", language="en") == (Control.HELP, CERTAIN)
    assert VOCABULARY.control("LANG", language="en") == (Control.LANG, CERTAIN)  # names no language
    assert VOCABULARY.language_named("french") == "fr"
    assert VOCABULARY.language_named("francais svp") == "fr"
    assert VOCABULARY.language_named("je parle pas anglais") == "fr"  # the longest entry decides
    assert VOCABULARY.language_named("je parle pas français") == "en"
    assert VOCABULARY.language_named("English please") == "en"
    assert VOCABULARY.language_named("lang") is None
    assert VOCABULARY.language_named("english or french") is None
    assert VOCABULARY.language_named("the french girl at the motel on the main street") is None  # long


# --- danger ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "help me now", "he is coming back", "HELP ME", "help me", "helpme", "please hurry", "Please help", "SOS",
        "sos!!", "🆘", "911", "911!!!", "911 please", "call 911", "hurry", "Hurry!", "HEEELP MEEE",
        "he's coming back", "hes coming back", "they are coming", "i'm scared", "im scared", "he has a gun",
        "he will hurt me", "i can't leave", "we cant leave", "locked in",
        "my boss took my passport, i work at a farm near leamington, we cant leave, 6 of us",
        "aidez-moi", "aidez moi", "aide moi", "Aide-moi!", "à l'aide", "a l'aide", "au secours", "vite", "VITE!!",
        "vite svp", "il revient", "elle revient", "ils arrivent", "urgence", "j'ai peur", "jai peur",
        "je suis enfermée", "envoyez la police", "send help",
        "hi, " + "there are girls in room 12 and " * 50 + "please help me",  # anywhere in a long message
    ],
)  # fmt: skip
def test_danger(text: str) -> None:
    assert VOCABULARY.danger(text)


@pytest.mark.parametrize(
    "text",
    [
        "help",  # HELP, not danger
        "HELP!",
        "aide",
        "I helped my neighbour",
        "he helps at the farm",
        "the 911 call was yesterday",  # 911 inside a sentence: a mention, not a call for help
        "911 Bank St, Ottawa",  # an address
        "call me at 911-555-0144",
        "il est parti vite",  # "vite" inside a sentence: quickly
        "she left in a hurry",
        "he is not coming back",  # the phrase must be whole and in order
        "i am not scared",
        "nobody is hurting her now",
        "emergency exit at the back of the motel",
        "",
        "🙂",
    ],
)
def test_not_danger(text: str) -> None:
    assert not VOCABULARY.danger(text)


# --- robustness ---------------------------------------------------------------------------------------

odd_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=4000)
word_soup = st.lists(
    st.sampled_from(["help", "me", "stop", "exit", "quit", "done", "yes", "no", "1", "🆘", "911", "pas", "sûr",
                     "aidez-moi", "'", "-", "👍🏽", "\u200d", "\ufe0f", "ééé", "exti", "fnii"]),
    max_size=800,
).map(" ".join)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(odd_text, word_soup),
    st.sampled_from([*ANSWER_GROUPS.values(), (YES,), ("words.no_such_list",), ()]),
    st.sampled_from([None, "en", "fr", "xx"]),
)
def test_never_raises_on_any_text(text: str, keys: tuple[str, ...], language: str | None) -> None:
    found = VOCABULARY.answer(text, keys, language=language)
    assert found is None or found in keys
    control = VOCABULARY.control(text, language=language)
    assert control is None or (isinstance(control[0], Control) and isinstance(control[1], Certainty))
    assert isinstance(VOCABULARY.danger(text), bool)
    assert VOCABULARY.language_named(text) in (None, *LANGUAGES)


@pytest.mark.parametrize(
    "text",
    [
        "help " * 1000,
        "stop " * 1000,
        "a" * 4000,
        "1" * 5000,  # more digits than int() takes by default
        "exti " * 800,
        "🆘" * 4000,
        "aidez " * 900,
        "?" * 4000,
        "\u0301" * 4000,
        "il y a " * 700,
        "\ud800 stop",  # even a lone surrogate
    ],
)
def test_long_or_strange_text_is_read_quickly(text: str) -> None:
    started = time.perf_counter()
    for _ in range(3):
        VOCABULARY.answer(text, WHEN)
        VOCABULARY.control(text, language="fr")
        VOCABULARY.danger(text)
        VOCABULARY.language_named(text)
    assert time.perf_counter() - started < 1.0
