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


def master_key_id(master: bytes) -> str:
    """A short, stable name of a master key that reveals nothing about it (an HMAC of a fixed
    text): stored next to every key it wraps and every audit row its audit key links."""
    return hmac.new(master, b"casemgmt/key-id/v1", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRing:
    """The keys derived from one master key, each for one use only.

    ``retired`` holds the key rings of earlier master keys during a rotation (``casemgmt keys
    rotate``): data keys wrapped by them still unwrap (by ``key_id``), and look-ups by name still
    find persons whose index was not recomputed yet. New keys are always wrapped by this one."""

    wrapping_key: bytes
    blind_index_key: bytes
    audit_key: bytes
    name_token_key: bytes
    key_id: str = ""
    retired: tuple[KeyRing, ...] = ()

    @classmethod
    def from_master(cls, master: bytes, retired: tuple[bytes, ...] | list[bytes] = ()) -> KeyRing:
        if len(master) != KEY_BYTES:
            raise MasterKeyError(f"the master key must be {KEY_BYTES} bytes, got {len(master)}")
        current_id = master_key_id(master)
        return cls(
            wrapping_key=_derive(master, b"casemgmt/key-wrapping/v1"),
            blind_index_key=_derive(master, b"casemgmt/blind-index/v1"),
            audit_key=_derive(master, b"casemgmt/audit-chain/v1"),
            name_token_key=_derive(master, b"casemgmt/name-token-index/v1"),
            key_id=current_id,
            retired=tuple(cls.from_master(old) for old in dict.fromkeys(retired)
                          if master_key_id(old) != current_id),
        )

    def rings(self) -> tuple[KeyRing, ...]:
        """This ring first, then the retired ones."""
        return (self, *self.retired)

    def ring(self, key_id: str | None) -> KeyRing | None:
        return next((r for r in self.rings() if r.key_id == key_id), None)

    def audit_keys(self) -> dict[str, bytes]:
        """Audit key by key id, for every master key known to this process."""
        return {r.key_id: r.audit_key for r in self.rings()}

    # --- person data keys -----------------------------------------------------------------

    def new_data_key(self) -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def wrap(self, person_id: uuid.UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.wrapping_key).encrypt(nonce, data_key, b"dek|" + person_id.bytes)

    def unwrap(self, person_id: uuid.UUID, wrapped: bytes, key_id: str | None = None) -> bytes:
        """The data key, unwrapped by the master key named ``key_id`` (by each known one in turn
        for a key wrapped before key ids, or by a master key this process does not know)."""
        named = self.ring(key_id) if key_id else None
        for ring in (named,) if named is not None else self.rings():
            try:
                return AESGCM(ring.wrapping_key).decrypt(
                    wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], b"dek|" + person_id.bytes
                )
            except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
                continue
        raise DecryptionError(f"the data key of person {person_id} does not unwrap") from None

    def wrap_audit_key(self, key_id: str, audit_key: bytes) -> bytes:
        """An audit key of an earlier master key, wrapped for the ``audit_keys`` table."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.wrapping_key).encrypt(nonce, audit_key, b"audit-key|" + key_id.encode())

    def unwrap_audit_key(self, key_id: str, wrapped: bytes, wrapped_under: str | None = None) -> bytes:
        named = self.ring(wrapped_under) if wrapped_under else None
        for ring in (named,) if named is not None else self.rings():
            try:
                return AESGCM(ring.wrapping_key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                                         b"audit-key|" + key_id.encode())
            except (InvalidTag, ValueError):
                continue
        raise DecryptionError(f"the archived audit key {key_id} does not unwrap")

    # --- blind index -----------------------------------------------------------------------

    def name_token(self, normalised_token: str) -> str:
        return name_token_digest(self.name_token_key, normalised_token)

    def name_token_digests(self, normalised_token: str) -> frozenset[str]:
        """The token's digest under every known master key (during a rotation a person's digests
        may still be of the retired key)."""
        return frozenset(name_token_digest(r.name_token_key, normalised_token) for r in self.rings())

    def blind_indexes(self, family_name: str, given_names: str, birth_date: str) -> list[str]:
        """The blind index under every known master key, this one first."""
        return [r.blind_index(family_name, given_names, birth_date) for r in self.rings()]

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


def load_retired_master_keys(key_file: Path | None, keys_b64: str | None) -> list[bytes]:
    """Earlier master keys configured for a rotation (a file with one base64 key per line, and/or
    a comma-separated environment value)."""
    texts: list[tuple[str, str]] = []
    if keys_b64:
        texts += [("CASEMGMT_RETIRED_MASTER_KEYS", t.strip()) for t in keys_b64.split(",") if t.strip()]
    if key_file is not None:
        try:
            lines = key_file.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise MasterKeyError(f"cannot read retired master keys file {key_file}: {exc}") from None
        texts += [(str(key_file), line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    keys = []
    for source, text in texts:
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError:
            raise MasterKeyError(f"{source}: a retired master key is not base64") from None
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"{source}: a retired master key must be {KEY_BYTES} bytes")
        keys.append(key)
    return keys


def keyring_from_settings(settings, master: bytes | None = None) -> KeyRing:
    """The current master key (or ``master``) with the retired ones of the settings."""
    current = master or load_master_key(settings.master_key_file, settings.master_key)
    return KeyRing.from_master(current, load_retired_master_keys(settings.retired_master_keys_file,
                                                                 settings.retired_master_keys))


def generate_master_key_file(path: Path) -> None:
    """For the demo: a fresh random master key, readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
