"""The webhook signature is checked with one HMAC in the usual case (bot.channels.twilio.signature),
and accepts exactly what twilio's RequestValidator.validate accepts: the URL as Twilio signed it,
with or without the scheme's port, and nothing else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from bot.channels.twilio.signature import SignatureCheck

TOKEN = "twilio-auth-QmV9xK2pL7"
URLS = st.sampled_from(
    [
        "https://tips.example.org/sms/twilio",
        "https://tips.example.org:443/sms/twilio",
        "http://tips.example.org:8080/sms/twilio",
        "https://tips.example.org/sms/twilio?x=1&y=%20",
        "https://tips.example.org:8443/sms/twilio/status",
    ]
)
FORMS = st.dictionaries(st.sampled_from(["Body", "From", "MessageSid", "NumMedia", "MediaUrl0"]), st.text(max_size=40), max_size=5)


@settings(max_examples=300, deadline=None)
@given(url=URLS, signed_url=URLS, form=FORMS, tamper=st.booleans())
def test_accepts_exactly_what_twilio_accepts(url: str, signed_url: str, form: dict[str, str], tamper: bool) -> None:
    reference = RequestValidator(TOKEN)
    signature = reference.compute_signature(signed_url, form)
    if tamper:
        signature = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    assert SignatureCheck(TOKEN).valid(url, form, signature) == reference.validate(url, form, signature)


class CountingValidator(RequestValidator):
    """twilio's validator, noting each URL it computes a signature for."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.computed: list[str] = []

    def compute_signature(self, uri, params, algorithm=None):  # noqa: ANN001 - twilio's signature
        self.computed.append(uri)
        return super().compute_signature(uri, params, algorithm)


def test_the_usual_request_costs_one_hmac() -> None:
    check, counting = SignatureCheck(TOKEN), CountingValidator(TOKEN)
    check._validator = counting
    url, form = "https://tips.example.org/sms/twilio", {"Body": "hello", "From": "+15145550100"}
    reference = RequestValidator(TOKEN)
    assert check.valid(url, form, reference.compute_signature(url, form)) and counting.computed == [url]
    counting.computed.clear()
    # Signed with the port (Twilio does, for some configurations): the second form is tried.
    assert check.valid(url, form, reference.compute_signature("https://tips.example.org:443/sms/twilio", form))
    assert counting.computed == [url, "https://tips.example.org:443/sms/twilio"]
    assert not check.valid(url, form, "not-a-signature")
