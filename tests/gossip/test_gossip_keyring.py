"""Gossip keyring: memberlist's AES-GCM wire format, keyring operations, the keyring file."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.gossip.config import GossipConfig
from agent.gossip.core import GossipCore, StreamRequest
from agent.gossip.errors import DecodeError
from agent.gossip.keyring import (
    KEYRING_FILE,
    OVERHEAD_BYTES,
    DecryptError,
    Keyring,
    KeyringError,
    decode_key,
    decrypt_payload,
    encrypt_payload,
    generate_key,
    setup_keyring,
)
from agent.gossip.memnet import InMemoryNetwork


def _key(size: int, fill: int = 1) -> str:
    return base64.b64encode(bytes([fill]) * size).decode()


@pytest.mark.parametrize("size", [16, 24, 32])
def test_round_trip_each_key_size(size: int) -> None:
    ring = Keyring(_key(size))
    sealed = ring.seal(b"hello gossip")
    assert sealed[0] == 1
    assert len(sealed) == len(b"hello gossip") + OVERHEAD_BYTES == len(b"hello gossip") + 29
    assert ring.open(sealed) == b"hello gossip"
    assert ring.overhead_bytes == 29


@pytest.mark.parametrize("size", [16, 24, 32])
def test_version_1_layout_is_version_nonce_ciphertext_tag(size: int) -> None:
    """Independent decoding with the raw AES-GCM primitive: 1 | nonce(12) | ct | tag(16), no AAD."""
    raw = bytes(range(size))
    sealed = Keyring(raw).seal(b"payload")
    nonce, body = sealed[1:13], sealed[13:]
    assert AESGCM(raw).decrypt(nonce, body, None) == b"payload"


def test_fresh_nonce_per_seal() -> None:
    ring = Keyring(_key(32))
    assert ring.seal(b"x") != ring.seal(b"x")


@pytest.mark.parametrize("plain", [b"", b"a", b"x" * 15, b"y" * 16, b"z" * 17, b"q" * 1000])
def test_version_0_padded_messages_are_accepted(plain: bytes) -> None:
    raw = os.urandom(32)
    sealed = encrypt_payload(raw, plain, version=0)
    assert sealed[0] == 0
    assert (len(sealed) - OVERHEAD_BYTES) % 16 == 0  # PKCS#7 padded to the AES block
    assert Keyring(raw).open(sealed) == plain
    assert decrypt_payload([raw], sealed) == plain


@pytest.mark.parametrize("plain", [b"abc" + b"\x01" * 12 + b"\x05", b"x" * 15 + b"\x00", b"x" * 15 + b"\x11", b""])
def test_version_0_with_bad_padding_is_rejected(plain: bytes) -> None:
    raw = os.urandom(16)
    nonce = os.urandom(12)
    bad = bytes((0,)) + nonce + AESGCM(raw).encrypt(nonce, plain, None)
    with pytest.raises(DecryptError, match="padding"):
        Keyring(raw).open(bad)


def test_tampered_ciphertext_tag_nonce_rejected() -> None:
    ring = Keyring(_key(32))
    sealed = bytearray(ring.seal(b"some gossip bytes"))
    for index in (5, 20, len(sealed) - 1):  # nonce, ciphertext, tag
        bad = bytearray(sealed)
        bad[index] ^= 0x01
        with pytest.raises(DecryptError):
            ring.open(bytes(bad))


def test_garbage_short_and_plaintext_rejected_as_decode_errors() -> None:
    ring = Keyring(_key(16))
    for data in (b"", b"\x01", b"\x01" + b"\x00" * 27, b"\x07" + b"\x00" * 40, b"\x01\x00\x01\x00\x05hello"):
        with pytest.raises(DecryptError):
            ring.open(data)
    assert issubclass(DecryptError, DecodeError)  # so the core drops it with state untouched


def test_wrong_key_rejected_and_extra_keys_tried() -> None:
    a, b = generate_key(), generate_key()
    sealed = Keyring(a).seal(b"msg")
    with pytest.raises(DecryptError, match="no installed key"):
        Keyring(b).open(sealed)
    assert Keyring(b, [a]).open(sealed) == b"msg"


def test_generate_key_is_32_bytes_base64() -> None:
    keys = {generate_key() for _ in range(8)}
    assert len(keys) == 8
    for k in keys:
        assert len(base64.b64decode(k, validate=True)) == 32


@pytest.mark.parametrize("bad", ["", "not base64!!", base64.b64encode(b"x" * 15).decode(),
                                 base64.b64encode(b"x" * 33).decode(), base64.b64encode(b"x" * 8).decode()])
def test_bad_keys_refused(bad: str) -> None:
    with pytest.raises(KeyringError):
        decode_key(bad)
    with pytest.raises(KeyringError):
        Keyring(bad)


def test_install_use_remove_list() -> None:
    k1, k2, k3 = generate_key(), generate_key(), generate_key()
    ring = Keyring(k1)
    ring.install(k2)
    ring.install(k2)  # idempotent
    assert ring.list_keys() == [k1, k2]
    assert k2 in ring and k3 not in ring
    with pytest.raises(KeyringError, match="not in the keyring"):
        ring.use(k3)
    ring.use(k2)
    assert ring.primary_key == k2 and ring.list_keys() == [k2, k1]
    assert Keyring(k2).open(ring.seal(b"m")) == b"m"  # new primary seals
    with pytest.raises(KeyringError, match="^Removing the primary key is not allowed$"):
        ring.remove(k2)
    ring.remove(k1)
    assert ring.list_keys() == [k2]
    ring.remove(k3)  # unknown: no-op
    assert len(ring) == 1


def test_keyring_file_persistence(tmp_path: Path) -> None:
    path = tmp_path / "serf" / "local.keyring"
    k1, k2 = generate_key(), generate_key()
    ring = Keyring(k1, path=path)
    ring.save()
    assert json.loads(path.read_text()) == [k1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring.install(k2)
    assert json.loads(path.read_text()) == [k1, k2]
    ring.use(k2)
    assert json.loads(path.read_text()) == [k2, k1]  # primary first
    ring.remove(k1)
    assert Keyring.load(path).list_keys() == [k2]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", ["", "{}", "[]", "[1]", '["nope"]'])
def test_bad_keyring_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "local.keyring"
    path.write_text(content)
    with pytest.raises(KeyringError):
        Keyring.load(path)


def test_setup_keyring_seeds_file_then_ignores_other_encrypt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    k1, k2 = generate_key(), generate_key()
    assert setup_keyring(tmp_path, None) is None  # no key, no file: plaintext gossip
    assert not (tmp_path / KEYRING_FILE).exists()
    ring = setup_keyring(tmp_path, k1)
    assert ring is not None and ring.list_keys() == [k1]
    assert json.loads((tmp_path / KEYRING_FILE).read_text()) == [k1]
    assert stat.S_IMODE((tmp_path / KEYRING_FILE).stat().st_mode) == 0o600
    # a later start with a different -encrypt: the file wins, with a warning
    with caplog.at_level(logging.WARNING, logger="agent.gossip.keyring"):
        again = setup_keyring(tmp_path, k2)
    assert again is not None and again.list_keys() == [k1]
    assert "keyring exists but -encrypt given, using keyring" in caplog.text
    # same key: no warning; no -encrypt: the file still applies; ops persist to it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent.gossip.keyring"):
        same = setup_keyring(tmp_path, k1)
    assert same is not None and caplog.text == ""
    later = setup_keyring(tmp_path, None)
    assert later is not None
    later.install(k2)
    later.use(k2)
    assert json.loads((tmp_path / KEYRING_FILE).read_text()) == [k2, k1]


def test_setup_keyring_without_file(tmp_path: Path) -> None:
    k = generate_key()
    ring = setup_keyring(tmp_path, k, disable_keyring_file=True)
    assert ring is not None and ring.path is None and ring.list_keys() == [k]
    assert not (tmp_path / KEYRING_FILE).exists()
    assert setup_keyring(None, k) is not None  # -dev: no data dir
    with pytest.raises(KeyringError):
        setup_keyring(tmp_path, "garbage")


def test_core_drops_packets_it_cannot_open() -> None:
    """The keyring as the core's PacketSeal: a wrong-key packet raises, state untouched."""
    net = InMemoryNetwork(seed=3)
    ring = Keyring(generate_key())
    other = Keyring(generate_key())
    core = GossipCore(GossipConfig.fast(), "a", ("10.0.0.1", 8301), rng=net.rng, now_s=0.0, seal=ring)
    core.take_outputs()
    intruder = GossipCore(GossipConfig.fast(), "b", ("10.0.0.2", 8301), rng=net.rng, now_s=0.0, seal=other)
    intruder.join(0.0, [("10.0.0.1", 8301)])
    (req,) = [o for o in intruder.take_outputs() if isinstance(o, StreamRequest)]
    with pytest.raises(DecryptError):
        core.handle_stream(0.1, ("10.0.0.2", 8301), req.payload)
    assert [m.name for m in core.members()] == ["a"]
    assert core.stats.bad_streams == 1
