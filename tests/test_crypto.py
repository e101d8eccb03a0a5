"""Envelope encryption of person fields, the blind index and the master key (pure, no database)."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest

from casemgmt.policy.loader import load_policies
from casemgmt.privacy.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    DecryptionError,
    KeyRing,
    MasterKeyError,
    decrypt_field,
    encrypt_field,
    load_master_key,
    normalise_name,
)

ROOT = Path(__file__).resolve().parent.parent
FIELDS = load_policies(ROOT / "policies").data.fields

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.from_master(MASTER)


def sample_values(spec) -> list:
    """Values a client may send for this field, as FieldSpec.parse returns them."""
    if spec.type == "text":
        raw = ["Ayşe Nur Öztürk-Łukasiewicz ✓ 日本語 عربى", "", "line\nbreak \"quoted\" \\ back",
               "x" * (spec.max_length or 10)]
    elif spec.type == "date":
        raw = ["1987-02-28", "2026-12-31"]
    elif spec.type == "enum":
        raw = list(spec.values)
    elif spec.type == "integer":
        raw = [spec.min if spec.min is not None else 0, spec.max if spec.max is not None else 10**6]
    else:
        raw = [True, False]
    return [spec.parse(v) for v in raw]


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_round_trip_for_every_field(ring, field):
    person = uuid.uuid4()
    data_key = ring.new_data_key()
    wrapped = ring.wrap(person, data_key)
    for value in sample_values(FIELDS[field]):
        blob = encrypt_field(data_key, person, field, value)
        assert isinstance(blob, bytes)
        key = ring.unwrap(person, wrapped)
        got = decrypt_field(key, person, field, blob)
        assert got == value
        assert type(got) is type(value)


def test_every_field_type_is_covered():
    assert {f.type for f in FIELDS.values()} == {"text", "date", "enum", "integer", "boolean"}


def test_plaintext_does_not_appear_in_the_ciphertext(ring):
    person = uuid.uuid4()
    blob = encrypt_field(ring.new_data_key(), person, "family_name", "Mustermann-Unverschlüsselt")
    assert b"Mustermann" not in blob
    assert "Mustermann".encode("utf-16-le") not in blob


def test_ciphertext_moved_to_another_person_does_not_decrypt(ring):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alice_key, bob_key = ring.new_data_key(), ring.new_data_key()
    blob = encrypt_field(alice_key, alice, "health_notes", "Diabetes")
    with pytest.raises(DecryptionError):
        decrypt_field(bob_key, bob, "health_notes", blob)
    # even under the very same data key the person id is bound in
    with pytest.raises(DecryptionError):
        decrypt_field(alice_key, bob, "health_notes", blob)
    # and with Bob's key but Alice's id (the row moved, the key lookup followed Bob)
    with pytest.raises(DecryptionError):
        decrypt_field(bob_key, alice, "health_notes", blob)
    assert decrypt_field(alice_key, alice, "health_notes", blob) == "Diabetes"


def test_ciphertext_moved_to_another_field_of_the_same_person_does_not_decrypt(ring):
    person = uuid.uuid4()
    key = ring.new_data_key()
    blob = encrypt_field(key, person, "family_name", "Öztürk")
    for other in ("given_names", "birth_place", "case_notes", "family_name_"):
        with pytest.raises(DecryptionError) as exc:
            decrypt_field(key, person, other, blob)
        assert other in str(exc.value)
        assert str(person) in str(exc.value)


def test_wrapped_key_does_not_unwrap_for_another_person(ring):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    data_key = ring.new_data_key()
    wrapped = ring.wrap(alice, data_key)
    assert ring.unwrap(alice, wrapped) == data_key
    with pytest.raises(DecryptionError) as exc:
        ring.unwrap(bob, wrapped)
    assert str(bob) in str(exc.value)


def test_another_master_key_cannot_unwrap(ring):
    person = uuid.uuid4()
    wrapped = ring.wrap(person, ring.new_data_key())
    with pytest.raises(DecryptionError):
        KeyRing.from_master(OTHER_MASTER).unwrap(person, wrapped)


def test_derived_keys_are_separate_and_deterministic(ring):
    again = KeyRing.from_master(MASTER)
    assert again == ring
    assert len({ring.wrapping_key, ring.blind_index_key, ring.audit_key, MASTER}) == 4
    assert all(len(k) == KEY_BYTES for k in (ring.wrapping_key, ring.blind_index_key, ring.audit_key))
    other = KeyRing.from_master(OTHER_MASTER)
    assert other.wrapping_key != ring.wrapping_key
    assert other.audit_key != ring.audit_key


def test_a_data_key_is_fresh_and_256_bits(ring):
    keys = {ring.new_data_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(k) == 32 for k in keys)


def test_tampering_any_byte_of_a_field_ciphertext_fails(ring):
    person = uuid.uuid4()
    key = ring.new_data_key()
    blob = encrypt_field(key, person, "case_notes", "Termin bei der ABH am 3.4.")
    assert len(blob) > NONCE_BYTES + 16
    for i in range(len(blob)):  # nonce, ciphertext and tag alike
        for flip in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= flip
            with pytest.raises(DecryptionError):
                decrypt_field(key, person, "case_notes", bytes(bad))


def test_tampering_any_byte_of_a_wrapped_key_fails(ring):
    person = uuid.uuid4()
    wrapped = ring.wrap(person, ring.new_data_key())
    for i in range(len(wrapped)):
        bad = bytearray(wrapped)
        bad[i] ^= 0x40
        with pytest.raises(DecryptionError):
            ring.unwrap(person, bytes(bad))


def test_extended_ciphertext_fails(ring):
    person = uuid.uuid4()
    key = ring.new_data_key()
    blob = encrypt_field(key, person, "phone", "+49 2331 12345")
    with pytest.raises(DecryptionError):
        decrypt_field(key, person, "phone", blob + b"\x00")


@pytest.mark.parametrize("length", [0, 1, 5, 7, 8, 11, 12, 20, 27])
def test_truncated_ciphertext_raises_decryption_error(ring, length):
    """An altered (here: cut) ciphertext is a DecryptionError, whatever its length."""
    person = uuid.uuid4()
    key = ring.new_data_key()
    blob = encrypt_field(key, person, "phone", "+49 2331 12345")
    assert length < len(blob)
    with pytest.raises(DecryptionError):
        decrypt_field(key, person, "phone", blob[:length])


@pytest.mark.parametrize("length", [0, 5, 12, 40])
def test_truncated_wrapped_key_raises_decryption_error(ring, length):
    person = uuid.uuid4()
    wrapped = ring.wrap(person, ring.new_data_key())
    with pytest.raises(DecryptionError):
        ring.unwrap(person, wrapped[:length])


def test_two_encryptions_of_the_same_value_differ(ring):
    person = uuid.uuid4()
    key = ring.new_data_key()
    blobs = {encrypt_field(key, person, "gender", "female") for _ in range(50)}
    assert len(blobs) == 50
    assert len({b[:NONCE_BYTES] for b in blobs}) == 50
    assert all(decrypt_field(key, person, "gender", b) == "female" for b in blobs)
    data_key = ring.new_data_key()
    assert ring.wrap(person, data_key) != ring.wrap(person, data_key)


# --- blind index -----------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("Müller", "müller"),
    ("MÜLLER", "muller"),  # accents are stripped, not transcribed (ü -> u, not ue)
    ("Müller", "Mu\u0308ller"),  # precomposed and combining umlaut
    ("Strauß", "STRAUSS"),
    ("Strauß", "strauss"),
    ("STRAU\u1e9e", "strauss"),  # capital sharp s
    ("Müller-Lüdenscheidt", "muller lüdenscheidt"),
    ("Müller-Lüdenscheidt", "MULLER LUDENSCHEIDT"),
    ("Müller - Lüdenscheidt", "muller ludenscheidt"),
    ("  Ayşe   Nur ", "ayse nur"),
    ("Ayşe\tNur", "Ayse Nur"),
    ("Ayşe\u00a0Nur", "Ayse Nur"),  # no-break space
    ("Çelik", "celik"),
    ("José-María", "jose maria"),
    ("Ǆoković", "džoković"),  # compatibility ligature (NFKD)
])
def test_normalise_name_ignores_case_accents_sharp_s_hyphens_and_spacing(a, b):
    assert normalise_name(a) == normalise_name(b)


def test_normalise_name_examples():
    assert normalise_name("  Müller-Lüdenscheidt ") == "muller ludenscheidt"
    assert normalise_name("Straße") == "strasse"
    assert normalise_name("---") == ""


def test_normalise_name_keeps_what_differs():
    assert normalise_name("Müller") != normalise_name("Mueller")  # no transcription promised
    assert normalise_name("Meyer") != normalise_name("Meier")
    assert normalise_name("Anna Lena") != normalise_name("Annalena")


def test_blind_index_is_equal_for_equivalent_spellings(ring):
    date = "1990-05-17"
    variants = [
        ("Müller-Lüdenscheidt", "Ayşe Nur"),
        ("müller lüdenscheidt", "AYSE NUR"),
        ("  MULLER   LUDENSCHEIDT ", " ayse-nur"),
        ("Mu\u0308ller-Lu\u0308denscheidt", "Ays\u0327e  Nur"),
    ]
    digests = {ring.blind_index(f, g, date) for f, g in variants}
    assert len(digests) == 1
    digest = digests.pop()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert ring.blind_index("Strauß", "Jörg", date) == ring.blind_index("STRAUSS", "jorg", date)


def test_blind_index_differs_for_another_birth_date_name_or_master_key(ring):
    base = ring.blind_index("Öztürk", "Ayşe", "1990-05-17")
    assert ring.blind_index("Öztürk", "Ayşe", "1990-05-18") != base
    assert ring.blind_index("Öztürk", "Ayse Nur", "1990-05-17") != base
    assert ring.blind_index("Ozturka", "Ayşe", "1990-05-17") != base
    assert KeyRing.from_master(OTHER_MASTER).blind_index("Öztürk", "Ayşe", "1990-05-17") != base


def test_blind_index_keeps_family_and_given_names_apart(ring):
    date = "1990-05-17"
    assert ring.blind_index("Anna", "Lena", date) != ring.blind_index("Lena", "Anna", date)
    assert ring.blind_index("Anna Lena", "Maria", date) != ring.blind_index("Anna", "Lena Maria", date)


def test_blind_index_is_not_a_plain_hash(ring):
    import hashlib

    text = "\x1f".join(("muller", "anna", "1990-05-17")).encode()
    assert ring.blind_index("Müller", "Anna", "1990-05-17") != hashlib.sha256(text).hexdigest()


# --- master key ------------------------------------------------------------------------------


def test_master_key_from_the_environment_value():
    key = os.urandom(32)
    assert load_master_key(None, base64.b64encode(key).decode()) == key


def test_master_key_from_a_file_with_a_trailing_newline(tmp_path):
    key = os.urandom(32)
    path = tmp_path / "master.key"
    path.write_text(base64.b64encode(key).decode() + "\n")
    assert load_master_key(path, None) == key


def test_environment_value_wins_over_the_file(tmp_path):
    env_key, file_key = os.urandom(32), os.urandom(32)
    path = tmp_path / "master.key"
    path.write_text(base64.b64encode(file_key).decode())
    assert load_master_key(path, base64.b64encode(env_key).decode()) == env_key


def test_no_master_key_at_all_says_how_to_set_one():
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(None, None)
    assert "CASEMGMT_MASTER_KEY" in str(exc.value)
    assert "CASEMGMT_MASTER_KEY_FILE" in str(exc.value)


def test_missing_key_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "master.key"
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(path, None)
    message = str(exc.value)
    assert str(path) in message
    assert "No such file" in message


def test_key_file_that_is_a_directory_is_a_master_key_error(tmp_path):
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(tmp_path, None)
    assert str(tmp_path) in str(exc.value)


@pytest.mark.parametrize("text", ["not base64 at all!", "abc", "@@@@", "QUJD\nREVG" + "!"])
def test_key_that_is_not_base64(tmp_path, text):
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(None, text)
    assert "CASEMGMT_MASTER_KEY" in str(exc.value)
    assert "not base64" in str(exc.value)
    path = tmp_path / "master.key"
    path.write_text(text)
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(path, None)
    assert str(path) in str(exc.value)
    assert "not base64" in str(exc.value)


def test_key_file_holding_raw_binary_bytes_is_a_master_key_error(tmp_path):
    """A plausible operator mistake (``head -c 32 /dev/urandom > master.key``) must give the
    helpful start-up error, not a UnicodeDecodeError traceback."""
    path = tmp_path / "master.key"
    path.write_bytes(b"\xff\xfe" + bytes(range(30)))
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(path, None)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_key_of_the_wrong_length(tmp_path, length):
    text = base64.b64encode(os.urandom(length)).decode()
    if length == 0:
        path = tmp_path / "master.key"
        path.write_text(text)
        with pytest.raises(MasterKeyError) as exc:
            load_master_key(path, None)
    else:
        with pytest.raises(MasterKeyError) as exc:
            load_master_key(None, text)
        assert "CASEMGMT_MASTER_KEY" in str(exc.value)
    assert "32 bytes" in str(exc.value)


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_keyring_refuses_a_master_key_of_the_wrong_length(length):
    with pytest.raises(MasterKeyError) as exc:
        KeyRing.from_master(os.urandom(length))
    assert "32 bytes" in str(exc.value)
    assert str(length) in str(exc.value)
