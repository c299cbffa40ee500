"""handlers.language_id: English, French, another language or no evidence, on SHORT texts.

The evaluation set below is what frightened people and witnesses text: mostly 1 to 12 words, no accents,
Québec French and texting shorthand, typos, names and addresses. The per-class thresholds are a
little below what the module measures on it (printed by ``test_accuracy_per_class`` with -s), so a
model or rule change that makes things worse fails here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from handlers import language_id
from handlers.language_id import LanguageGuess, guess, identify

# fmt: off
ENGLISH = [
    'Hi', 'Hello?', 'hello', 'hey', 'help me', 'please help', 'HELP ME', 'help me now',
    'please hurry', 'he is coming back', 'yes he is here', 'he took my passport', 'i cant leave',
    'my boss wont let me go', 'they are watching me', 'i need help now',
    'there is a girl in room 12', 'someone is being held at the motel',
    'i saw a young girl with an older man', 'they take all our money', 'we work 16 hours a day',
    'he hits me', 'i am scared', 'im scared', 'can you help me', "i don't know where i am",
    'they locked the door', 'i have to be quick', 'is this anonymous?', 'how does this work',
    'I want to report something', "there's a van outside every night", 'my friend is in trouble',
    "she's only 15", 'they moved us to another city', 'we sleep in the basement',
    'the manager keeps our ids', 'they say i owe them money', 'im not allowed to talk to anyone',
    'what happens if i report', 'will the police come', 'i dont want to get deported',
    "i don't know", 'not sure', 'last week', 'yesterday', 'right now', 'tonight',
    'every day since march', 'farm work', 'a witness', "i'm the victim", 'thank you', 'thanks',
    "that's all", 'send it', 'yes please', 'no he left', 'I think so',
    'my boss took my passport, i work at a farm near leamington, we cant leave, 6 of us',
    'Two young girls go in with an older man every night', 'he is outside the door',
    'they will kill me if i talk', 'please dont call this number', 'where do i go',
    'i am at the bus station', 'can someone come', 'the girl looks 14', 'they took my phone',
    'i need to get out', 'is anyone there', 'he says i owe him', 'please text back',
    'my cousin is being forced to work', "i'm locked in", 'we are not paid',
    'they threaten my family', 'can i stay anonymous', 'somebody is following me',
    'the boss yells at us', 'i want to go home', 'what should i do', "i can't talk long",
]

FRENCH = [
    'Bonjour', 'allo', 'Allô?', 'salut', 'Bonsoir', 'aidez moi svp', 'aidez-moi', "à l'aide",
    'jsp', 'chu pas capable', 'il revient', 'il revient bientot', "j'ai peur", 'jai peur',
    'il a pris mon passeport', 'je peux pas partir', 'mon boss me laisse pas sortir',
    'ils gardent nos papiers', "y'a une fille dans la chambre 12", 'chu pogné icitte',
    'je sais pas ou je suis', 'je sais pas', 'chais pas', 'pas certaine', 'vite svp', 'il est ici',
    'oui il est la', 'ma soeur est en danger', 'elle a juste 15 ans', 'on travaille 16h par jour',
    'ils prennent tout notre argent', 'je veux faire un signalement', "est-ce que c'est anonyme?",
    "c'est quoi le numero", 'je parle pas anglais', 'francais svp', 'je comprends pas', 'merci',
    'merci beaucoup', "c'est tout", "quelqu'un me surveille", "ils m'ont enfermée",
    'le gerant garde nos cartes', 'on dort dans le sous-sol', 'un van vient chaque soir',
    'depuis 3 mois', 'hier soir', 'ce soir', 'en ce moment', "c'est moi la victime",
    'je suis temoin', 'mon chum me force', 'y me frappe', 'chu tannée',
    'jpeux pas parler longtemps', 'chu dans un motel a laval', 'ils vont me tuer',
    'appelez la police', "envoyez quelqu'un", 'je suis pas capable de partir',
    'faut que je fasse vite', 'mon cell est surveillé', "c'est urgent", 'svp aidez moi',
    "y'a quelqu'un?", 'tsé je sais pas quoi faire', 'ma blonde est pognée là-bas',
    'Deux filles tres jeunes entrent avec un homme chaque soir', 'il est devant la porte',
    'oui svp', 'non il est parti', "j'ai besoin d'aide", 'je suis enfermé', 'on est pas payés',
    'ils menacent ma famille', 'il me suit partout', 'je veux rentrer chez moi',
    "qu'est-ce que je fais", 'je peux pas parler', 'mon patron crie', 'aidez nous',
    'ils ont mon passeport', 'chu pas en sécurité', 'personne me croit', 'je veux rester anonyme',
    'svp répondez',
]

OTHER = [
    ('es', 'Hola, necesito ayuda, mi jefe no me deja salir de la casa'), ('es', 'ayuda por favor'),
    ('es', 'no puedo salir'), ('es', 'me quitaron el pasaporte'), ('es', 'tengo miedo'),
    ('es', 'no hablo inglés'), ('es', 'estoy en peligro'), ('es', 'Hola'),
    ('es', 'trabajo en una granja y no me pagan'), ('tl', 'Tulong po, hindi ako makaalis'),
    ('tl', 'tulungan nyo po ako'), ('tl', 'kinuha ng amo ko ang passport ko'),
    ('tl', 'hindi ako pinapayagang lumabas'), ('tl', 'natatakot ako'),
    ('tl', 'nasa bahay ako at hindi ako makalabas'), ('pt', 'Socorro, preciso de ajuda'),
    ('pt', 'meu patrão pegou meu passaporte'), ('pt', 'não consigo sair daqui'),
    ('pt', 'estou com medo'), ('pt', 'não falo inglês'), ('zh', '救命，老板拿走了我的护照'), ('zh', '我不能离开'),
    ('zh', '我在多伦多的一家餐馆工作，地址是士巴丹拿道123号'), ('zh', '请帮帮我'), ('zh', '我很害怕'), ('pa', 'ਮਦਦ ਕਰੋ'),
    ('pa', 'ਮੇਰਾ ਪਾਸਪੋਰਟ ਮਾਲਕ ਕੋਲ ਹੈ'), ('pa', 'ਮੈਂ ਬਾਹਰ ਨਹੀਂ ਜਾ ਸਕਦਾ'),
    ('pa', 'ਮੈਨੂੰ ਡਰ ਲੱਗਦਾ ਹੈ'), ('ar', 'ساعدوني من فضلكم'), ('ar', 'أخذ صاحب العمل جواز سفري'),
    ('ar', 'لا أستطيع المغادرة'), ('ar', 'أنا خائفة'), ('uk', 'Допоможіть, будь ласка'),
    ('uk', 'Мій роботодавець забрав мій паспорт'), ('uk', 'Я не можу піти'),
    ('uk', 'Мені страшно'), ('am', 'እባካችሁ እርዱኝ'), ('am', 'አሰሪዬ ፓስፖርቴን ወሰደብኝ'),
    ('am', 'መውጣት አልችልም'), ('am', 'ፈርቻለሁ'), ('vi', 'Cứu tôi với'),
    ('vi', 'Chủ đã lấy hộ chiếu của tôi'), ('vi', 'Tôi không thể rời đi'), ('vi', 'Tôi sợ lắm'),
    ('hi', 'मेरी मदद करो'), ('hi', 'मालिक ने मेरा पासपोर्ट ले लिया'),
    ('hi', 'मैं बाहर नहीं जा सकती'), ('hi', 'मुझे डर लग रहा है'), ('ru', 'Помогите мне'),
    ('ko', '도와주세요'), ('fa', 'کمکم کنید'), ('ur', 'میری مدد کریں'), ('ro', 'Ajutor, nu pot pleca'),
    ('it', 'Aiutatemi per favore'), ('pl', 'Pomocy, nie mogę wyjść'),
    ('de', 'Hilfe, ich kann nicht raus'), ('ja', '助けてください'), ('ta', 'எனக்கு உதவுங்கள்'),
    ('th', 'ช่วยด้วย'), ('id', 'Tolong saya, saya tidak bisa pergi'), ('sw', 'Nisaidie tafadhali'),
    ('ht', 'Ede m tanpri, mwen pa ka soti'), ('es', 'necesito salir de aquí'),
    ('es', 'por favor ayúdenme'), ('tl', 'tulungan mo ako'), ('tl', 'wala akong pera'),
    ('pt', 'preciso de ajuda urgente'), ('pt', 'não tenho dinheiro'), ('vi', 'tôi cần giúp đỡ'),
    ('id', 'tolong bantu saya'), ('ro', 'ajutați-mă vă rog'), ('pl', 'potrzebuję pomocy'),
    ('tr', 'yardım edin lütfen'), ('hu', 'kérem segítsen'), ('de', 'ich brauche hilfe'),
    ('it', 'ho bisogno di aiuto'), ('sw', 'naomba msaada'),
]

NO_EVIDENCE = [
    'ok', 'OK', '?', '??', '911', 'SOS', '🆘', '12', '1', '2', 'no', 'a', 'at', '!!!', '...', '👍',
    'Maria', 'John Smith', '123 Main St', 'Motel 6', 'K2P 1L4', '613-555-0199', 'XYZ 987', 'Laval',
    'Kanata', 'Jean', 'ok ok', 'hmm', 'Brampton', 'Mississauga', 'Ahmed', 'Priya', '4', '',
    'Sarah', 'Carlos', 'Montreal', 'Scarborough', 'Fatima', 'yo', 'eh', 'lol', 'hm', 'ok?',
    '45 King St W', 'Jose Garcia',
]
# fmt: on

LABELLED: list[tuple[str, str | None]] = [
    *((text, "en") for text in ENGLISH),
    *((text, "fr") for text in FRENCH),
    *((text, "other") for _, text in OTHER),
    *((text, None) for text in NO_EVIDENCE),
]

# Measured: en 80/83 (2 other, 1 None), fr 84/86 (1 other, 1 None), other 77/78 (1 None), no evidence
# 45/46 (1 en: "Scarborough"); no en<->fr confusion, nothing in another language read as en or fr.
MIN_ACCURACY = {"en": 0.93, "fr": 0.93, "other": 0.95, None: 0.90}


def _confusion() -> dict[str | None, Counter[str | None]]:
    confusion: dict[str | None, Counter[str | None]] = {}
    for text, expected in LABELLED:
        confusion.setdefault(expected, Counter())[identify(text)] += 1
    return confusion


def test_the_evaluation_set_is_big_and_varied_enough() -> None:
    assert len(ENGLISH) >= 60 and len(FRENCH) >= 60 and len(OTHER) >= 60 and len(NO_EVIDENCE) >= 30
    assert len({code for code, _ in OTHER}) >= 10
    assert all(len(text.split()) <= 20 for text, _ in LABELLED)
    assert sum(len(text.split()) <= 12 for text, _ in LABELLED) >= 0.95 * len(LABELLED)


def test_accuracy_per_class() -> None:
    confusion = _confusion()
    report = {
        str(label): {str(k): v for k, v in counts.most_common()} for label, counts in confusion.items()
    }
    print("\nconfusion (expected -> got):", report)
    for label, minimum in MIN_ACCURACY.items():
        counts = confusion[label]
        assert counts[label] / sum(counts.values()) >= minimum, (label, dict(counts))


def test_english_and_french_are_rarely_confused() -> None:
    confusion = _confusion()
    assert confusion["en"]["fr"] + confusion["fr"]["en"] <= 1, (confusion["en"], confusion["fr"])


def test_another_language_is_not_read_as_english_or_french() -> None:
    wrong = [(code, text, identify(text)) for code, text in OTHER if identify(text) in ("en", "fr")]
    assert wrong == []


@pytest.mark.parametrize("code", ["es", "tl"])
def test_spanish_and_tagalog_never_come_out_as_english(code: str) -> None:
    texts = [text for c, text in OTHER if c == code]
    assert texts and [t for t in texts if identify(t) == "en"] == []


def test_no_evidence_is_never_a_confident_english_or_french_more_than_once() -> None:
    assert sum(identify(text) in ("en", "fr") for text in NO_EVIDENCE) <= 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # T4: read as English before, because of "no" and "at"
        ("Hola, necesito ayuda, mi jefe no me deja salir de la casa", "other"),
        ("Tulong po, hindi ako makaalis", "other"),
        ("nasa bahay ako at hindi ako makalabas", "other"),
        ("救命，老板拿走了我的护照", "other"),
        ("我在多伦多的一家餐馆工作，地址是士巴丹拿道123号", "other"),
        ("ਮਦਦ ਕਰੋ", "other"),
        ("ساعدوني من فضلكم", "other"),
        ("Допоможіть, будь ласка", "other"),
        ("Socorro, preciso de ajuda", "other"),
        ("እባካችሁ እርዱኝ", "other"),
        ("Cứu tôi với", "other"),
        ("मेरी मदद करो", "other"),
        # greetings
        ("Bonjour", "fr"), ("allo", "fr"), ("Allô?", "fr"), ("salut", "fr"), ("Bonsoir", "fr"),
        ("Hi", "en"), ("Hello?", "en"), ("Hola", "other"),
        # Québec French, slang, no accents
        ("jsp", "fr"), ("chu pas capable", "fr"), ("aidez moi svp", "fr"), ("il revient", "fr"),
        ("Oui svp", "fr"), ("je sais pas", "fr"), ("aidez-moi", "fr"),
        ("help me now", "en"), ("he is coming back", "en"), ("HELP ME", "en"),
        # no evidence
        ("ok", None), ("?", None), ("911", None), ("SOS", None), ("🆘", None), ("12", None),
        ("no", None), ("a", None), ("at", None), ("Maria", None), ("John Smith", None),
        ("123 Main St", None), ("K2P 1L4", None), ("613-555-0199", None), ("", None), ("   ", None),
    ],
)
def test_specific_cases(text: str, expected: str | None) -> None:
    assert identify(text) == expected, guess(text)


def test_guess_gives_the_detail() -> None:
    spanish = guess("Hola, necesito ayuda, mi jefe no me deja salir de la casa")
    assert spanish == LanguageGuess("other", "es", spanish.confidence, "model")
    assert spanish.confidence > 0.9
    assert guess("Tulong po, hindi ako makaalis").detected == "tl"
    chinese = guess("救命，老板拿走了我的护照")
    assert (chinese.language, chinese.detected, chinese.reason) == ("other", "zh", "script")
    assert guess("Bonjour").reason == "greeting"
    assert guess("no") == LanguageGuess(None)


def test_candidates_restrict_the_answer_not_the_comparison() -> None:
    spanish = "Hola, necesito ayuda, mi jefe no me deja salir de la casa"
    assert identify(spanish, candidates={"en", "fr"}) is None  # never "en"
    assert identify("救命，老板拿走了我的护照", candidates={"en", "fr"}) is None
    assert identify("il revient", candidates={"fr"}) == "fr"
    assert identify("he is coming back", candidates={"fr"}) is None
    assert identify("Hi", candidates=("fr", "other")) is None
    assert identify(spanish, candidates=["other"]) == "other"
    for bad in (set(), {"es"}, {"en", "english"}):
        with pytest.raises(ValueError):
            identify("hello", candidates=bad)


def test_pure_and_deterministic() -> None:
    texts = [text for text, _ in LABELLED]
    first = [identify(text) for text in texts]
    language_id._guess.cache_clear()
    assert [identify(text) for text in reversed(texts)] == first[::-1]


def test_the_model_is_loaded_once_and_is_fast() -> None:
    language_id.preload()
    model = language_id._model()
    language_id.preload()
    assert language_id._model() is model
    texts = [text for text, _ in LABELLED]
    uncached = language_id._guess.__wrapped__
    start = time.perf_counter()
    for _ in range(3):
        for text in texts:
            uncached(text, language_id.ALL_CANDIDATES)
    per_call = (time.perf_counter() - start) / (3 * len(texts))
    print(f"\n{per_call * 1e6:.0f} µs per call")
    assert per_call < 0.002  # measured about 0.1 ms; generous for a loaded CI machine


def test_the_model_ships_inside_the_installed_package() -> None:
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    path = Path(MODEL_DIR) / MODEL_FILE
    assert path.is_file() and path.stat().st_size > 1_000_000
    assert "site-packages" in path.parts or "dist-packages" in path.parts


def test_loads_and_answers_with_no_network() -> None:
    """A fresh interpreter whose sockets all fail: importing, loading and identifying still work,
    because nothing tries the network."""
    code = textwrap.dedent(
        """
        import socket

        def no_network(*args, **kwargs):
            raise AssertionError("network access attempted")

        socket.socket.connect = no_network
        socket.socket.connect_ex = no_network
        socket.socket.sendto = no_network
        socket.create_connection = no_network
        socket.getaddrinfo = no_network

        from handlers.language_id import identify, preload
        preload()
        print(identify("Hola, necesito ayuda"), identify("aidez moi svp"), identify("help me now"))
        """
    )
    root = Path(language_id.__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["other", "fr", "en"]
