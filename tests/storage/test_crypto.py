"""storage.crypto: known-answer vectors, envelope layout, tamper / wrong-AAD / wrong-key refusal,
rotation, and the key ring file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.crypto import Cipher, DecryptionError, KeyRing, KeyRingError, associated_data

# --- fixed material for the known-answer tests (never use outside tests) ----------------------

KEY = bytes(range(32))
KEY_ID = "k-test"
PEPPER = bytes(range(32, 64))
NONCE = bytes(range(12))
PLAINTEXT = b"ZEBRA-PLACE-4417"

# Pinned: a change to the envelope layout, the AAD encoding or the key derivation breaks these.
PINNED_ENVELOPE = (
    "01066b2d74657374000102030405060708090a0b"
    "1d47944984c89257cc02d2a685dd495a2712a5677920ebaed918af6f0655aef7"
)
PINNED_PSEUDONYM = "9e6b45dbdc7057ed5202ae6304497e8d2c4df0c9da572ab9676bb045b492eabf"


@pytest.fixture
def fixed_ring() -> KeyRing:
    return KeyRing(KEY_ID, {KEY_ID: KEY}, PEPPER)


@pytest.fixture
def fixed(fixed_ring: KeyRing) -> Cipher:
    return Cipher(fixed_ring)


def _lp(part: bytes) -> bytes:
    return len(part).to_bytes(2, "big") + part


# --- (a) the primitive: AES-256-GCM, McGrew & Viega "The GCM mode of operation", test cases ---

GCM_VECTORS = [
    pytest.param(  # Test Case 13: zero key, empty plaintext
        "00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b", id="tc13"
    ),
    pytest.param(  # Test Case 14: zero key, one zero block
        "00" * 32, "00" * 12, "00" * 16, "",
        "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919", id="tc14",
    ),
    pytest.param(  # Test Case 16: AES-256 with associated data
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
        id="tc16",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("key", "iv", "plaintext", "aad", "ciphertext", "tag"), GCM_VECTORS)
def test_aes256gcm_known_answer(key: str, iv: str, plaintext: str, aad: str, ciphertext: str, tag: str) -> None:
    aead = AESGCM(bytes.fromhex(key))
    sealed = aead.encrypt(bytes.fromhex(iv), bytes.fromhex(plaintext), bytes.fromhex(aad) or None)
    assert sealed.hex() == ciphertext + tag
    assert aead.decrypt(bytes.fromhex(iv), sealed, bytes.fromhex(aad) or None) == bytes.fromhex(plaintext)


# --- (b) Tipline's envelope ----------------------------------------------------------------------


def test_associated_data_layout_is_length_prefixed_parts() -> None:
    expected = _lp(b"tipline/v1") + _lp(b"tips") + _lp(b"answers") + _lp(b"tip-1")
    assert associated_data("tips", "answers", "tip-1") == expected


def test_associated_data_parts_cannot_run_together() -> None:
    assert associated_data("t", "a", "bc") != associated_data("t", "ab", "c")
    assert associated_data("ta", "b", "c") != associated_data("t", "ab", "c")
    assert associated_data("t", "c", "") != associated_data("t", "", "c")


def test_envelope_is_version_keyid_nonce_and_aesgcm_output(fixed: Cipher) -> None:
    aad = _lp(b"tipline/v1") + _lp(b"tips") + _lp(b"answers") + _lp(b"tip-1")
    expected = (
        b"\x01" + bytes([len(KEY_ID)]) + KEY_ID.encode() + NONCE + AESGCM(KEY).encrypt(NONCE, PLAINTEXT, aad)
    )
    envelope = fixed.encrypt(PLAINTEXT, table="tips", column="answers", row="tip-1", nonce=NONCE)
    assert envelope == expected
    assert envelope.hex() == PINNED_ENVELOPE
    assert fixed.decrypt(envelope, table="tips", column="answers", row="tip-1") == PLAINTEXT


def test_random_nonces_make_every_envelope_different(fixed: Cipher) -> None:
    a = fixed.encrypt(PLAINTEXT, table="tips", column="answers", row="tip-1")
    b = fixed.encrypt(PLAINTEXT, table="tips", column="answers", row="tip-1")
    assert a != b
    assert a[8:20] != b[8:20]  # the nonce sits after 1 + 1 + len("k-test") bytes


# --- (c) pseudonyms and lookup hashes ------------------------------------------------------------


def test_pseudonym_is_hmac_sha256_of_channel_and_id(fixed: Cipher) -> None:
    expected = hmac.new(PEPPER, b"telegram|123456789", hashlib.sha256).hexdigest()
    assert fixed.pseudonym("telegram", "123456789") == expected == PINNED_PSEUDONYM
    assert fixed.pseudonym("sms", "123456789") != PINNED_PSEUDONYM
    assert "123456789" not in PINNED_PSEUDONYM


def test_lookup_hash_is_keyed_and_purpose_bound(fixed: Cipher) -> None:
    expected = hmac.new(PEPPER, b"lookup|receipt|483920", hashlib.sha256).hexdigest()
    assert fixed.lookup_hash("receipt", "483920") == expected
    assert fixed.lookup_hash("other", "483920") != expected
    assert hashlib.sha256(b"483920").hexdigest() != expected


# --- round trip and refusal ----------------------------------------------------------------------


def test_round_trip_bytes_and_json(cipher: Cipher) -> None:
    sealed = cipher.encrypt(b"", table="t", column="c", row="r")
    assert cipher.decrypt(sealed, table="t", column="c", row="r") == b""
    value = {"where": "Gare du Nord", "ages": [15, 16], "é": "ü"}
    sealed = cipher.encrypt_json(value, table="tips", column="answers", row="x")
    assert cipher.decrypt_json(sealed, table="tips", column="answers", row="x") == value
    assert b"Gare du Nord" not in sealed


# Byte offsets in an envelope under key id "k-test": 0 version, 1 id length, 2..7 id, 8..19 nonce.
@pytest.mark.parametrize(
    "index", [pytest.param(0, id="version"), pytest.param(3, id="key-id"), pytest.param(8, id="nonce-first"),
              pytest.param(19, id="nonce-last"), pytest.param(20, id="ciphertext-first"),
              pytest.param(35, id="ciphertext-last"), pytest.param(36, id="tag-first"),
              pytest.param(-1, id="tag-last")],
)  # fmt: skip
def test_flipped_byte_does_not_open(fixed: Cipher, index: int) -> None:
    envelope = bytearray(fixed.encrypt(PLAINTEXT, table="tips", column="answers", row="tip-1", nonce=NONCE))
    envelope[index] ^= 0x01
    with pytest.raises(DecryptionError) as caught:
        fixed.decrypt(bytes(envelope), table="tips", column="answers", row="tip-1")
    assert PLAINTEXT.decode() not in str(caught.value)


@pytest.mark.parametrize(
    "opened_as",
    [
        pytest.param(("tips", "answers", "tip-2"), id="row-swap"),
        pytest.param(("tips", "contact", "tip-1"), id="column-swap"),
        pytest.param(("drafts", "answers", "tip-1"), id="table-swap"),
        pytest.param(("tips", "answers", "tip-10"), id="row-prefix"),
    ],
)
def test_wrong_associated_data_does_not_open(fixed: Cipher, opened_as: tuple[str, str, str]) -> None:
    envelope = fixed.encrypt(PLAINTEXT, table="tips", column="answers", row="tip-1")
    table, column, row = opened_as
    with pytest.raises(DecryptionError):
        fixed.decrypt(envelope, table=table, column=column, row=row)


def test_wrong_key_with_same_key_id_does_not_open(fixed: Cipher) -> None:
    impostor = Cipher(KeyRing(KEY_ID, {KEY_ID: bytes(32)}, PEPPER))
    envelope = fixed.encrypt(PLAINTEXT, table="tips", column="answers", row="tip-1")
    with pytest.raises(DecryptionError) as caught:
        impostor.decrypt(envelope, table="tips", column="answers", row="tip-1")
    message = str(caught.value)
    assert PLAINTEXT.decode() not in message and KEY.hex() not in message


def test_other_key_ring_reports_unknown_key_id(fixed: Cipher) -> None:
    other = Cipher(KeyRing.generate())
    envelope = fixed.encrypt(PLAINTEXT, table="tips", column="answers", row="tip-1")
    with pytest.raises(DecryptionError, match="k-test") as caught:
        other.decrypt(envelope, table="tips", column="answers", row="tip-1")
    assert PLAINTEXT.decode() not in str(caught.value)


def test_unknown_key_id_does_not_open(fixed: Cipher) -> None:
    envelope = fixed.encrypt(PLAINTEXT, table="t", column="c", row="r", nonce=NONCE)
    renamed = envelope.replace(b"k-test", b"k-gone", 1)
    with pytest.raises(DecryptionError, match="not in the key ring"):
        fixed.decrypt(renamed, table="t", column="c", row="r")


@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01", id="version-only"),
        pytest.param(bytes.fromhex(PINNED_ENVELOPE)[:20], id="no-ciphertext"),
        pytest.param(bytes.fromhex(PINNED_ENVELOPE)[:35], id="short-tag"),
        pytest.param(b"\x02" + bytes.fromhex(PINNED_ENVELOPE)[1:], id="future-version"),
        pytest.param(b"\x01\xff" + b"x" * 40, id="id-length-past-end"),
        pytest.param(b"not an envelope at all, just text", id="garbage"),
    ],
)
def test_truncated_or_garbage_envelope_does_not_open(fixed: Cipher, envelope: bytes) -> None:
    with pytest.raises(DecryptionError):
        fixed.decrypt(envelope, table="tips", column="answers", row="tip-1")


# --- rotation ------------------------------------------------------------------------------------


def test_rotation_keeps_old_keys_and_pepper(keyring: KeyRing) -> None:
    rotated = keyring.rotated()
    assert rotated.active_key_id != keyring.active_key_id
    assert rotated.active_key_id in rotated.keys
    assert rotated.keys[keyring.active_key_id] == keyring.keys[keyring.active_key_id]
    assert rotated.keys[rotated.active_key_id] != keyring.keys[keyring.active_key_id]
    assert rotated.pepper == keyring.pepper
    assert rotated.fingerprint() == keyring.fingerprint()
    twice = rotated.rotated()
    assert len(twice.keys) == 3 and len({twice.active_key_id, rotated.active_key_id, keyring.active_key_id}) == 3


def test_rotation_old_envelopes_open_and_new_use_new_key(keyring: KeyRing) -> None:
    old, new = Cipher(keyring), Cipher(keyring.rotated())
    old_envelope = old.encrypt(PLAINTEXT, table="t", column="c", row="r")
    new_envelope = new.encrypt(PLAINTEXT, table="t", column="c", row="r")
    assert new.decrypt(old_envelope, table="t", column="c", row="r") == PLAINTEXT
    assert new.key_id_of(old_envelope) == keyring.active_key_id
    assert new.key_id_of(new_envelope) == new.active_key_id != keyring.active_key_id
    assert new.needs_reencryption(old_envelope) is True
    assert new.needs_reencryption(new_envelope) is False
    with pytest.raises(DecryptionError):  # the old ring knows nothing of the new key
        old.decrypt(new_envelope, table="t", column="c", row="r")


def test_rotation_keeps_pseudonyms_lookups_and_fingerprint(keyring: KeyRing) -> None:
    old, new = Cipher(keyring), Cipher(keyring.rotated())
    assert new.pseudonym("sms", "+15550100") == old.pseudonym("sms", "+15550100")
    assert new.lookup_hash("receipt", "123456") == old.lookup_hash("receipt", "123456")
    assert new.fingerprint() == old.fingerprint()
    assert Cipher(KeyRing.generate()).fingerprint() != old.fingerprint()


# --- the key ring file ---------------------------------------------------------------------------


def test_key_ring_save_and_load_round_trip(keyring: KeyRing, tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "keys.json"
    ring = keyring.rotated()
    ring.save(path)
    assert KeyRing.load(path) == ring
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring.rotated().save(path)  # overwriting keeps owner-only permissions
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"]  # no temporary file left behind


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="does not exist"):
        KeyRing.load(tmp_path / "absent.json")


def _good() -> dict[str, object]:
    return {
        "format": "tipline-keyring/1",
        "active": "k1",
        "keys": {"k1": base64.b64encode(KEY).decode()},
        "pepper": base64.b64encode(PEPPER).decode(),
    }


def _with(**changes: object) -> str:
    data = _good()
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{not json", "not valid JSON", id="malformed-json"),
        pytest.param("[1, 2]", "expected format", id="not-an-object"),
        pytest.param(_with(format="tipline-keyring/0"), "expected format", id="wrong-format"),
        pytest.param(_with(keys={}), "no keys", id="no-keys"),
        pytest.param(_with(keys={"k1": base64.b64encode(KEY[:16]).decode()}), "not 32 bytes", id="short-key"),
        pytest.param(_with(keys={"k1": "!!not*base64!!"}), "key 'k1' is not valid base64", id="bad-base64-key"),
        pytest.param(_with(pepper="%%%"), "pepper is not valid base64", id="bad-base64-pepper"),
        pytest.param(_with(pepper=base64.b64encode(b"short").decode()), "at least 32 bytes", id="short-pepper"),
        pytest.param(_with(active="k9"), "active key id is not among the keys", id="active-missing"),
    ],
)
def test_malformed_key_ring_is_refused_clearly(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match=message) as caught:
        KeyRing.from_json(text)
    assert base64.b64encode(KEY).decode() not in str(caught.value)
    path = tmp_path / "keys.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KeyRingError, match=message):
        KeyRing.load(path)


def test_good_key_ring_json_loads() -> None:
    ring = KeyRing.from_json(json.dumps(_good()))
    assert ring.keys == {"k1": KEY} and ring.pepper == PEPPER and ring.active_key_id == "k1"


def test_key_ring_repr_shows_no_key_material(fixed_ring: KeyRing) -> None:
    for text in (repr(fixed_ring), str(fixed_ring), repr(Cipher(fixed_ring))):
        for secret in (KEY, PEPPER):
            assert repr(secret) not in text
            assert secret.hex() not in text
            assert base64.b64encode(secret).decode() not in text
    assert KEY_ID in repr(fixed_ring)
