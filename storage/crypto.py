"""All of Tipline's cryptography, in one place.

* Encryption at rest: AES-256-GCM in a versioned envelope that names the key that sealed it, with
  associated data binding each ciphertext to its table, column and row (a ciphertext copied into
  another row or column fails to open).
* Tipster pseudonyms: HMAC-SHA256 over ``channel | provider id`` with a pepper that rotates every
  epoch (a day by default) and is destroyed two epochs later, so last month's pseudonyms cannot be
  tied to a phone number by anyone, us included (a number space of ~10^10 is no secret to anyone
  who holds the pepper). The epoch peppers live in the database, sealed with the key ring's AES key
  (``seal_epoch_pepper``); ``storage.senders`` creates and destroys them.
* Officer pseudonyms and everything that must stay stable for months use the key ring's fixed
  pepper: lookup hashes for receipts (the tipster's secret code, so a stolen database cannot be
  brute-forced offline), the key ring fingerprint, and the integrity keys below.
* Integrity: a row seal (HMAC over a tip's plain columns: case, flags, receipt hash, state) and the
  audit log's hash chain, both keyed from the key ring, so write access to the database file alone
  cannot swap a receipt hash, flip a flag or rebuild the audit chain unnoticed.

The key ring lives outside the database: a JSON file (0600) or the content of an environment
variable. Rotation adds a new active key and keeps the old ones so existing rows still open; rows
are then re-encrypted under the active key (``SqliteStore.reencrypt_all``, ``keygen --rotate``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENVELOPE_VERSION = 1
KEYRING_FORMAT = "tipline-keyring/1"
log = logging.getLogger(__name__)
_NONCE_BYTES = 12
_AAD_PREFIX = b"tipline/v1"


class KeyRingError(Exception):
    """The key ring is missing, malformed, or does not match the data."""


class DecryptionError(Exception):
    """A ciphertext did not open: wrong key, wrong row, or tampered bytes.

    The message never contains plaintext or key material."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise KeyRingError(f"key ring: {what} is not valid base64") from exc


def _new_key_id() -> str:
    return f"k{datetime.now(timezone.utc):%Y%m%d}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class KeyRing:
    active_key_id: str
    keys: dict[str, bytes] = field(repr=False)
    pepper: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.active_key_id not in self.keys:
            raise KeyRingError("key ring: the active key id is not among the keys")
        for key_id, key in self.keys.items():
            if len(key) != 32:
                raise KeyRingError(f"key ring: key {key_id!r} is not 32 bytes (AES-256)")
            if not key_id.isascii() or not 0 < len(key_id) < 64:
                raise KeyRingError("key ring: key ids are short ASCII names")
        if len(self.pepper) < 32:
            raise KeyRingError("key ring: the pepper must be at least 32 bytes")

    @classmethod
    def generate(cls) -> KeyRing:
        key_id = _new_key_id()
        return cls(key_id, {key_id: AESGCM.generate_key(bit_length=256)}, secrets.token_bytes(32))

    def rotated(self) -> KeyRing:
        """A new ring whose active key is fresh; old keys stay so old rows still open.

        The fixed pepper does not change: receipt hashes, officer pseudonyms, the fingerprint and the
        integrity keys must stay stable (tipster pseudonyms rotate on their own, see above)."""
        key_id = _new_key_id()
        while key_id in self.keys:
            key_id = _new_key_id()
        keys = dict(self.keys)
        keys[key_id] = AESGCM.generate_key(bit_length=256)
        return KeyRing(key_id, keys, self.pepper)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": KEYRING_FORMAT,
                "active": self.active_key_id,
                "keys": {k: _b64(v) for k, v in self.keys.items()},
                "pepper": _b64(self.pepper),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyRingError("key ring: not valid JSON") from exc
        if not isinstance(data, dict) or data.get("format") != KEYRING_FORMAT:
            raise KeyRingError(f"key ring: expected format {KEYRING_FORMAT!r}")
        keys = data.get("keys")
        if not isinstance(keys, dict) or not keys:
            raise KeyRingError("key ring: no keys")
        return cls(
            str(data.get("active")),
            {str(k): _unb64(str(v), f"key {k!r}") for k, v in keys.items()},
            _unb64(str(data.get("pepper", "")), "pepper"),
        )

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """The key ring in ``path``. Refused: a file that cannot be read, is not a key ring, that
        its owner may not read (it works only where permissions are ignored, as root, and breaks
        on the next machine), or that others may write (the keys could be swapped). Readable by
        others is logged (the keys may have leaked) but used: secret mounts are often 0444."""
        try:
            mode = path.stat().st_mode & 0o777
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise KeyRingError(f"key ring file {path} does not exist (for a new line run: python main.py init)") from exc
        except UnicodeDecodeError:
            raise KeyRingError(f"key ring file {path} is not a key ring (not text): restore it from its backup") from None
        except OSError as exc:
            raise KeyRingError(f"key ring file {path} cannot be read ({exc.strerror}): check its owner and mode (0600)") from exc
        if not mode & 0o400 or mode & 0o022:
            why = "its owner may not read it" if not mode & 0o400 else "others may write it"
            raise KeyRingError(f"key ring file {path} has mode {mode:03o} ({why}): make it 0600 (chmod 600 {path})")
        if mode & 0o044:
            log.error("key ring file %s is readable by others (mode %03o): make it 0600, and treat its keys as seen", path, mode)
        try:
            return cls.from_json(text)
        except KeyRingError as exc:
            raise KeyRingError(f"key ring file {path} is unusable ({exc}): restore it from its backup") from None

    def save(self, path: Path, *, replace: bool = True) -> None:
        """Write atomically, readable by the owner only (0600) from the first byte. With
        ``replace=False`` an existing file wins: FileExistsError (two instances starting at once
        on one data directory end up with the same key ring, never one each)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # fails if the file exists, atomically
        finally:
            Path(tmp).unlink(missing_ok=True)

    def fingerprint(self) -> str:
        """A value stored in the database to detect a key ring that belongs to other data.

        Derived from the pepper (which never rotates), so it is stable across key rotation and
        reveals nothing about the keys."""
        return hmac.new(self.pepper, b"tipline/keyring-fingerprint", hashlib.sha256).hexdigest()[:32]


EPOCH_PEPPER_BYTES = 32
EPOCH_PEPPER_TABLE = "pseudonym_peppers"  # the associated data of a sealed epoch pepper names it


def new_epoch_pepper() -> bytes:
    return secrets.token_bytes(EPOCH_PEPPER_BYTES)


def pseudonym_epoch(now: float, epoch_hours: float) -> int:
    """The epoch a time falls in: epochs are counted from the Unix epoch, so with 24 hours they
    start at 00:00 UTC. Every process computes the same number from the same clock."""
    return int(now // (epoch_hours * 3600))


@dataclass(frozen=True)
class EpochPeppers:
    """The tipster peppers still alive: the current epoch's, and the previous one's when it exists
    (a conversation in progress at the boundary is found under it and re-keyed)."""

    current: int
    peppers: dict[int, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.peppers or not set(self.peppers) <= {self.current, self.current - 1}:
            raise KeyRingError("epoch peppers: only the current and the previous epoch may be alive")

    @property
    def previous(self) -> bytes | None:
        return self.peppers.get(self.current - 1)


@dataclass(frozen=True)
class SenderNames:
    """A tipster's pseudonym now, and under the previous epoch's pepper (None once none is kept)."""

    current: str
    previous: str | None


def _sender_hmac(pepper: bytes, channel: str, provider_id: str) -> str:
    return hmac.new(pepper, f"{channel}|{provider_id}".encode("utf-8"), hashlib.sha256).hexdigest()


def associated_data(table: str, column: str, row: str) -> bytes:
    parts = [_AAD_PREFIX, table.encode(), column.encode(), row.encode()]
    # Length-prefix each part so ("a", "bc") and ("ab", "c") can never collide.
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


class Cipher:
    """Seals and opens values for one (table, column, row) slot, and makes pseudonyms."""

    def __init__(self, keyring: KeyRing) -> None:
        self._ring = keyring
        self._aead = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}
        self._epochs: EpochPeppers | None = None  # installed by storage.senders once the store is open

    @property
    def active_key_id(self) -> str:
        return self._ring.active_key_id

    def encrypt(self, plaintext: bytes, *, table: str, column: str, row: str, nonce: bytes | None = None) -> bytes:
        """Envelope = version | key id length | key id | nonce | ciphertext+tag.

        ``nonce`` is for known-answer tests only; in use it is always random (96 bits)."""
        key_id = self._ring.active_key_id.encode("ascii")
        nonce = nonce if nonce is not None else os.urandom(_NONCE_BYTES)
        if len(nonce) != _NONCE_BYTES:
            raise ValueError("AES-GCM nonces here are 96 bits")
        sealed = self._aead[self._ring.active_key_id].encrypt(nonce, plaintext, associated_data(table, column, row))
        return bytes([ENVELOPE_VERSION, len(key_id)]) + key_id + nonce + sealed

    def decrypt(self, envelope: bytes, *, table: str, column: str, row: str) -> bytes:
        key_id, nonce, sealed = self._split(envelope)
        aead = self._aead.get(key_id)
        if aead is None:
            raise DecryptionError(f"sealed with key {key_id!r}, which is not in the key ring")
        try:
            return aead.decrypt(nonce, sealed, associated_data(table, column, row))
        except InvalidTag:
            raise DecryptionError(f"{table}.{column} did not open: wrong key, wrong row or tampered") from None

    def encrypt_json(self, value: object, *, table: str, column: str, row: str) -> bytes:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return self.encrypt(data, table=table, column=column, row=row)

    def decrypt_json(self, envelope: bytes, *, table: str, column: str, row: str) -> object:
        return json.loads(self.decrypt(envelope, table=table, column=column, row=row))

    def key_id_of(self, envelope: bytes) -> str:
        return self._split(envelope)[0]

    def needs_reencryption(self, envelope: bytes) -> bool:
        return self.key_id_of(envelope) != self._ring.active_key_id

    @staticmethod
    def _split(envelope: bytes) -> tuple[str, bytes, bytes]:
        if len(envelope) < 2 or envelope[0] != ENVELOPE_VERSION:
            raise DecryptionError("not a Tipline envelope (unknown version)")
        id_len = envelope[1]
        start = 2 + id_len
        if len(envelope) < start + _NONCE_BYTES + 16:
            raise DecryptionError("envelope is truncated")
        key_id = envelope[2:start].decode("ascii", errors="replace")
        return key_id, envelope[start : start + _NONCE_BYTES], envelope[start + _NONCE_BYTES :]

    # --- pseudonyms and lookups -------------------------------------------------------------

    def pseudonym(self, channel: str, provider_id: str) -> str:
        """An OFFICER's name (a Telegram user id, "officer-console", an on-call SMS number; and the
        officer group chat): HMAC-SHA256(fixed pepper, channel | provider id). Officers are not
        tipsters: the audit log names them by this pseudonym for good and must stay readable, and
        on-call numbers are configured anyway. Tipsters are named by ``tipster_pseudonyms``."""
        return _sender_hmac(self._ring.pepper, channel, provider_id)

    def use_epoch_peppers(self, epochs: EpochPeppers) -> None:
        self._epochs = epochs

    @property
    def epoch_peppers(self) -> EpochPeppers | None:
        return self._epochs

    def tipster_pseudonyms(self, channel: str, provider_id: str) -> SenderNames:
        """The only name a tipster has in Tipline: HMAC-SHA256(epoch pepper, channel | provider id)
        under the current epoch's pepper, and under the previous one's (to find a conversation that
        started before the boundary). Once an epoch's pepper is destroyed, nobody can recompute its
        pseudonyms from a phone number."""
        if self._epochs is None:
            raise KeyRingError("the epoch peppers are not loaded (the store was not opened for tipsters)")
        previous = self._epochs.previous
        return SenderNames(
            _sender_hmac(self._epochs.peppers[self._epochs.current], channel, provider_id),
            _sender_hmac(previous, channel, provider_id) if previous is not None else None,
        )

    def seal_epoch_pepper(self, epoch: int, pepper: bytes) -> bytes:
        """An epoch pepper at rest: sealed with the active AES key, bound to its epoch."""
        return self.encrypt(pepper, table=EPOCH_PEPPER_TABLE, column="pepper", row=str(epoch))

    def open_epoch_pepper(self, epoch: int, sealed: bytes) -> bytes:
        pepper = self.decrypt(sealed, table=EPOCH_PEPPER_TABLE, column="pepper", row=str(epoch))
        if len(pepper) != EPOCH_PEPPER_BYTES:
            raise DecryptionError("an epoch pepper has the wrong length")
        return pepper

    def lookup_hash(self, purpose: str, value: str) -> str:
        """Keyed hash for finding a row by a secret value (a receipt) without storing it. The fixed
        pepper: a receipt must open its case for months, across any number of epochs."""
        message = f"lookup|{purpose}|{value}".encode("utf-8")
        return hmac.new(self._ring.pepper, message, hashlib.sha256).hexdigest()

    def fingerprint(self) -> str:
        return self._ring.fingerprint()

    # --- integrity -------------------------------------------------------------------------

    def _integrity(self, purpose: str, message: str) -> str:
        key = hmac.new(self._ring.pepper, b"tipline/integrity-key", hashlib.sha256).digest()
        return hmac.new(key, f"{purpose}|{message}".encode("utf-8"), hashlib.sha256).hexdigest()

    def row_seal(self, table: str, row: str, values: tuple[object, ...]) -> str:
        """A keyed MAC over a row's plain columns (bound to its table and id)."""
        return self._integrity("row", json.dumps([table, row, *values], separators=(",", ":")))

    def chain_hash(self, previous: str, record: str) -> str:
        """The audit log's chain: each row commits to the one before it, under a key from the key
        ring, so someone without the keys cannot rebuild the chain after editing a row."""
        return self._integrity("audit", f"{previous}\n{record}")


def unkeyed_chain_hash(previous: str, record: str) -> str:
    """The audit chain before it was keyed (schema 2 and earlier): read once, at the upgrade."""
    return hashlib.sha256(f"{previous}\n{record}".encode("utf-8")).hexdigest()


def random_digits(count: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(count))
