"""Envelope encryption of personal fields and the keyed blind index.

Each person has a random 256-bit data key; it is stored only wrapped (AES-256-GCM) by a key
derived from the master key. Every field value is encrypted with the person's data key under
AES-256-GCM with the person id and the field name as associated data, so a ciphertext copied to
another person or field does not decrypt. Destroying one person's wrapped key makes all of that
person's fields unreadable (erasure), without touching anyone else's data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12
KEY_BYTES = 32


class MasterKeyError(Exception):
    """The master key is missing or malformed (a start-up error)."""


class DecryptionError(Exception):
    """A ciphertext does not belong to this person and field, or was altered."""


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(master)


@dataclass(frozen=True)
class KeyRing:
    """The keys derived from one master key, each for one use only."""

    wrapping_key: bytes
    blind_index_key: bytes
    audit_key: bytes
    name_token_key: bytes

    @classmethod
    def from_master(cls, master: bytes) -> KeyRing:
        if len(master) != KEY_BYTES:
            raise MasterKeyError(f"the master key must be {KEY_BYTES} bytes, got {len(master)}")
        return cls(
            wrapping_key=_derive(master, b"casemgmt/key-wrapping/v1"),
            blind_index_key=_derive(master, b"casemgmt/blind-index/v1"),
            audit_key=_derive(master, b"casemgmt/audit-chain/v1"),
            name_token_key=_derive(master, b"casemgmt/name-token-index/v1"),
        )

    # --- person data keys -----------------------------------------------------------------

    def new_data_key(self) -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def wrap(self, person_id: uuid.UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.wrapping_key).encrypt(nonce, data_key, b"dek|" + person_id.bytes)

    def unwrap(self, person_id: uuid.UUID, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self.wrapping_key).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"dek|" + person_id.bytes
            )
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            raise DecryptionError(f"the data key of person {person_id} does not unwrap") from None

    # --- blind index -----------------------------------------------------------------------

    def name_token(self, normalised_token: str) -> str:
        return name_token_digest(self.name_token_key, normalised_token)

    def blind_index(self, family_name: str, given_names: str, birth_date: str) -> str:
        """Keyed digest of name and birth date: finds a person without storing plaintext."""
        text = "\x1f".join((normalise_name(family_name), normalise_name(given_names), birth_date))
        return hmac.new(self.blind_index_key, text.encode(), hashlib.sha256).hexdigest()


def name_token_digest(key: bytes, normalised_token: str) -> str:
    """Keyed digest of one normalised name token: the closed-world check of finding texts asks
    "is this word a name of someone in our records?" without a readable list of names."""
    return hmac.new(key, normalised_token.encode(), hashlib.sha256).hexdigest()


def _field_aad(person_id: uuid.UUID, field: str) -> bytes:
    return b"field|" + person_id.bytes + b"|" + field.encode()


def encrypt_field(data_key: bytes, person_id: uuid.UUID, field: str, value: Any) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(value, ensure_ascii=False).encode()
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, _field_aad(person_id, field))


def decrypt_field(data_key: bytes, person_id: uuid.UUID, field: str, blob: bytes) -> Any:
    try:
        plaintext = AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _field_aad(person_id, field))
    except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
        raise DecryptionError(f"field '{field}' of person {person_id} does not decrypt") from None
    return json.loads(plaintext)


def normalise_name(name: str) -> str:
    """Case, accents, ß and spacing do not matter when looking a name up."""
    decomposed = unicodedata.normalize("NFKD", name.casefold().replace("ß", "ss"))
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(letters.replace("-", " ").split())


def load_master_key(key_file: Path | None, key_b64: str | None) -> bytes:
    """The master key from the environment (base64) or a key file (base64 text)."""
    if key_b64:
        source, text = "CASEMGMT_MASTER_KEY", key_b64
    elif key_file is not None:
        try:
            source, text = str(key_file), key_file.read_text(encoding="ascii").strip()
        except OSError as exc:
            raise MasterKeyError(f"cannot read master key file {key_file}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise MasterKeyError(f"{key_file}: not base64 text (raw key bytes? encode them with base64)") from None
    else:
        raise MasterKeyError(
            "no master key: set CASEMGMT_MASTER_KEY (base64) or CASEMGMT_MASTER_KEY_FILE"
        )
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise MasterKeyError(f"{source}: not base64") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{source}: the master key must be {KEY_BYTES} bytes")
    return key


def generate_master_key_file(path: Path) -> None:
    """For the demo: a fresh random master key, readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
