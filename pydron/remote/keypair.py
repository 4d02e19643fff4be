"""The provider key pair that installs a cloud entry's ``publickey`` on its nodes.

Providers with named key pairs (EC2, OpenStack, ...) get the key once per run,
before any node is created: an existing pair of that name holding the same
key is reused, a missing one is imported, and a pair of that name holding
another key is an error naming both fingerprints.  Letting libcloud import
the key per ``create_node`` instead fails from the second node on: EC2
computes another fingerprint than libcloud does, so libcloud never finds the
pair it imported and imports it again (``InvalidKeyPair.Duplicate``).

Providers report fingerprints in several formats, so a local key is compared
in all of them: MD5 and SHA-256 of the OpenSSH key blob (``ssh-keygen -l``,
libcloud, OpenStack) and of the DER ``SubjectPublicKeyInfo`` (EC2's imported
RSA keys).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Any

#: Name prefix of the key pairs pydron names itself (``pydron-<16 hex digits>``).
NAME_PREFIX = "pydron-"

_RSA_OID = bytes.fromhex("06092a864886f70d010101") + b"\x05\x00"   # rsaEncryption, NULL
_ED25519_ALGORITHM = bytes.fromhex("300506032b6570")                # SEQ { id-Ed25519 }

# One find-or-import at a time in this process: two entries with the same key
# must not both import it.  Another process racing us gets "Duplicate" and re-reads.
_lock = threading.Lock()


@dataclass(frozen=True)
class PublicKey:
    """An OpenSSH public key line, parsed."""

    path: str
    text: str          #: the line as read (``type base64 [comment]``)
    kind: str          #: e.g. ``ssh-ed25519``, ``ssh-rsa``
    blob: bytes        #: the decoded key

    @property
    def openssh_fingerprint(self) -> str:
        """What ``ssh-keygen -l -f FILE`` shows: ``SHA256:<base64>``."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"

    def default_name(self) -> str:
        """A key pair name that only this key gets: ``pydron-`` and 16 hex digits of its hash."""
        return NAME_PREFIX + hashlib.sha256(self.blob).hexdigest()[:16]

    def fingerprints(self) -> set[str]:
        """This key's fingerprint in every format a provider may report (normalised)."""
        found = set()
        for data in filter(None, (self.blob, _spki(self.kind, self.blob))):
            for algorithm in (hashlib.md5, hashlib.sha1, hashlib.sha256):
                digest = algorithm(data).digest()
                found.add(digest.hex())
                found.add(base64.b64encode(digest).decode().rstrip("="))
        return found

    def matches(self, fingerprint: str | None) -> bool:
        return fingerprint is not None and normalise(fingerprint) in self.fingerprints()


def read_public_key(path: str) -> PublicKey:
    """Parse the OpenSSH public key file ``path``; ValueError says why it is not one."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read().strip()
    parts = text.split()
    if len(parts) < 2 or "\n" in text:
        raise ValueError(f"{path} is not an OpenSSH public key (one line: type, base64 key, comment)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{path}: the key part of the line is not base64") from None
    fields = _ssh_strings(blob)
    if not fields or fields[0] != parts[0].encode():
        raise ValueError(f"{path}: key type {parts[0]!r} does not match the key it holds")
    return PublicKey(path, text, parts[0], blob)


def normalise(fingerprint: str) -> str:
    """A fingerprint as ``fingerprints()`` lists it: hex lowercase without colons, base64 unpadded."""
    text = fingerprint.strip()
    text = re.sub(r"^(?i:md5|sha1|sha256):", "", text)
    if re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}",
                    text):
        return text.replace(":", "").lower()
    return text.rstrip("=")


def supports_key_pairs(driver: Any, create_parameters: dict | None) -> bool:
    """Whether ``driver`` has named key pairs that ``create_node(ex_keyname=...)`` uses."""
    from libcloud.compute.base import NodeDriver

    cls = type(driver)
    own = all(getattr(cls, name, None) is not getattr(NodeDriver, name, None)
              for name in ("list_key_pairs", "import_key_pair_from_string"))
    return own and (create_parameters is None or "ex_keyname" in create_parameters)


class KeyPairMismatch(Exception):
    """A key pair of the wanted name exists and holds another key."""


def ensure(driver: Any, name: str, key: PublicKey | None) -> str:
    """The key pair ``name`` at the provider, holding ``key``: reused or imported (once).

    With ``key`` None the pair must exist already (a ``keypair`` given without
    ``publickey``).  Raises KeyPairMismatch, LookupError (no such pair) or what
    the driver raised.
    """
    with _lock:
        existing = _find(driver, name)
        if existing is None:
            if key is None:
                raise LookupError(f"no key pair {name!r} (give `publickey` to import one)")
            try:
                driver.import_key_pair_from_string(name, key.text)
                return name
            except Exception as exc:  # noqa: BLE001 - another run imported it meanwhile?
                if "duplicate" not in f"{type(exc).__name__} {exc}".lower():
                    raise
                existing = _find(driver, name)
                if existing is None:
                    raise
        if key is not None and not key.matches(existing.fingerprint):
            raise KeyPairMismatch(
                f"key pair {name!r} holds another key (fingerprint "
                f"{existing.fingerprint}) than {key.path} ({key.openssh_fingerprint})")
        return name


def _find(driver: Any, name: str) -> Any:
    for pair in driver.list_key_pairs():
        if pair.name == name:
            return pair
    return None


def _ssh_strings(blob: bytes) -> list[bytes]:
    """The length-prefixed strings an OpenSSH key blob is made of ([] if malformed)."""
    out, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            return []
        size = int.from_bytes(blob[i:i + 4], "big")
        if i + 4 + size > len(blob):
            return []
        out.append(blob[i + 4:i + 4 + size])
        i += 4 + size
    return out


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _spki(kind: str, blob: bytes) -> bytes | None:
    """The key's DER SubjectPublicKeyInfo (RSA and Ed25519 only), as EC2 hashes it."""
    fields = _ssh_strings(blob)
    if kind == "ssh-rsa" and len(fields) == 3:
        exponent, modulus = fields[1], fields[2]   # mpints: DER INTEGER contents as they are
        rsa_key = _der(0x30, _der(0x02, modulus) + _der(0x02, exponent))
        return _der(0x30, _der(0x30, _RSA_OID) + _der(0x03, b"\x00" + rsa_key))
    if kind == "ssh-ed25519" and len(fields) == 2 and len(fields[1]) == 32:
        return _der(0x30, _ED25519_ALGORITHM + _der(0x03, b"\x00" + fields[1]))
    return None
