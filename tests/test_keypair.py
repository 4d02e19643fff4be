"""pydron.remote.keypair: a local public key is recognised in every fingerprint format providers report."""
from __future__ import annotations

import subprocess

import pytest

from pydron.remote import keypair
from realparts import need_module


def make_key(tmp_path, kind):
    path = tmp_path / kind
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", f"me@{kind}",
                    "-f", str(path)], stdin=subprocess.DEVNULL, check=True, timeout=60)
    return str(path) + ".pub"


@pytest.fixture(scope="module", params=["rsa", "ed25519", "ecdsa"])
def key_file(request, tmp_path_factory):
    return make_key(tmp_path_factory.mktemp("keys"), request.param)


def ssh_keygen_fingerprint(path, algorithm):
    out = subprocess.run(["ssh-keygen", "-l", "-E", algorithm, "-f", path], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    return out.split()[1]          # e.g. MD5:aa:bb:... or SHA256:base64


def test_ssh_keygen_fingerprints_match(key_file):
    key = keypair.read_public_key(key_file)
    md5, sha256 = ssh_keygen_fingerprint(key_file, "md5"), ssh_keygen_fingerprint(key_file, "sha256")
    assert key.openssh_fingerprint == sha256
    assert key.matches(md5) and key.matches(sha256)
    assert key.matches(md5.upper().replace("MD5:", ""))          # bare, upper-case hex
    assert key.matches(md5.replace("MD5:", "").replace(":", ""))  # without colons
    assert key.matches(sha256.replace("SHA256:", "") + "=")      # padded base64
    assert not key.matches(None) and not key.matches("00:11:22")


def test_ec2_style_fingerprints_match(key_file):
    """EC2 (and moto) hash the DER SubjectPublicKeyInfo: MD5 for RSA, SHA-256 for Ed25519."""
    serialization = need_module("cryptography.hazmat.primitives.serialization",
                                "comparing with EC2's fingerprints needs cryptography (moto's)")
    key = keypair.read_public_key(key_file)
    with open(key_file, "rb") as handle:
        public = serialization.load_ssh_public_key(handle.read())
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib

    if key.kind == "ecdsa-sha2-nistp256":
        assert keypair._spki(key.kind, key.blob) is None   # EC2 imports no ECDSA keys
        return
    assert keypair._spki(key.kind, key.blob) == der
    for algorithm in (hashlib.md5, hashlib.sha1, hashlib.sha256):
        digest = algorithm(der).hexdigest()
        assert key.matches(":".join(digest[i:i + 2] for i in range(0, len(digest), 2)))


def test_another_key_does_not_match(tmp_path, key_file):
    key = keypair.read_public_key(key_file)
    other = make_key(tmp_path, "ed25519")
    assert not key.matches(ssh_keygen_fingerprint(other, "md5"))
    assert not key.matches(ssh_keygen_fingerprint(other, "sha256"))
    assert keypair.read_public_key(other).default_name() != key.default_name()


def test_default_name_is_stable_and_names_the_key(key_file):
    name = keypair.read_public_key(key_file).default_name()
    assert name == keypair.read_public_key(key_file).default_name()
    assert name.startswith("pydron-") and len(name) == len("pydron-") + 16


@pytest.mark.parametrize("text,expected", [
    ("", "is not an OpenSSH public key"),
    ("ssh-ed25519", "is not an OpenSSH public key"),
    ("ssh-ed25519 !!!notbase64 me", "is not base64"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOmq me", "does not match the key it holds"),
    ("ssh-ed25519 AAAA\nssh-ed25519 AAAA", "is not an OpenSSH public key"),
])
def test_not_a_public_key(tmp_path, text, expected):
    path = tmp_path / "bad.pub"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected) as info:
        keypair.read_public_key(str(path))
    assert str(path) in str(info.value)
