"""Twilio's ``X-Twilio-Signature``, checked with twilio's own signing and URL rules, in one HMAC
for the usual request.

``RequestValidator.validate`` always computes the signature twice (the URL with its port and
without) before comparing. The same two variants are tried here, in order, the configured URL's
own form first, and the second only when the first does not match: the accepted set is exactly
twilio's. Comparison is constant-time. A JSON webhook (``bodySHA256`` in the query) takes
twilio's own path whole.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from twilio.request_validator import RequestValidator, add_port, remove_port


class SignatureCheck:
    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def valid(self, url: str, form: Mapping[str, Any], signature: str) -> bool:
        if "bodySHA256=" in url:
            return self._validator.validate(url, form, signature)
        given = signature.encode("utf-8", "replace")
        return any(
            hmac.compare_digest(self._validator.compute_signature(candidate, form).encode(), given) for candidate in _variants(url)
        )


@lru_cache(maxsize=64)
def _variants(url: str) -> tuple[str, ...]:
    """The URL as given, then its other form (with the scheme's port added, or removed)."""
    parsed = urlparse(url)
    forms = (url, add_port(parsed), remove_port(parsed))
    return tuple(dict.fromkeys(forms))
