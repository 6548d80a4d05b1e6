"""The repository header: same keys for every client, wrong keys and tampering refused."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

import escale.crypto.keys as keys_module
from escale.crypto import KdfParams, KeySecret, create_repository_header, load_secret, open_repository_header
from escale.errors import CryptoError, IntegrityError, ProtocolError, WrongKeyError
from tests.crypto.conftest import CHEAP_KDF


def clear_cache() -> None:
    """Forget every key derivation this process cached, as a new process would start."""
    with keys_module._cache_lock:
        keys_module._cache.clear()


def _fields(header: bytes) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(header)
    return loaded


def _rewrite(header: bytes, **changes: object) -> bytes:
    """The header with fields changed, in canonical form, the MAC left as it was."""
    obj = {**_fields(header), **changes}
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


@pytest.fixture
def passphrase() -> KeySecret:
    return load_secret(None, "correct horse battery staple")


@pytest.fixture
def pass_repo(passphrase: KeySecret) -> bytes:
    header, _ = create_repository_header("aes-256-gcm", passphrase, kdf=CHEAP_KDF)
    return header


def test_header_states_algorithm_and_kdf(pass_repo: bytes, key_secret: KeySecret) -> None:
    fields = _fields(pass_repo)
    assert fields["algorithm"] == "aes-256-gcm"
    assert fields["kdf"] == {"name": "scrypt", "n": CHEAP_KDF.n, "r": CHEAP_KDF.r, "p": CHEAP_KDF.p}
    assert len(base64.b64decode(str(fields["salt"]))) == 32
    key_header, _ = create_repository_header("fernet", key_secret)
    assert _fields(key_header)["kdf"] == {"name": "hkdf-sha256"}


def test_default_kdf_is_memory_hard() -> None:
    header, _ = create_repository_header("aes-256-gcm", load_secret(None, "pw"))
    assert _fields(header)["kdf"] == {"name": "scrypt", "n": 2**17, "r": 8, "p": 1}


def test_every_client_derives_the_same_keys(passphrase: KeySecret, tmp_path: pytest.TempPathFactory) -> None:
    header, creator = create_repository_header("chacha20-poly1305", passphrase, kdf=CHEAP_KDF)
    clear_cache()  # another process: nothing cached
    # the same passphrase from a key file (trailing newline stripped)
    path = tmp_path / "pass.txt"  # type: ignore[operator]
    path.write_text("correct horse battery staple\n")
    path.chmod(0o600)
    joiner = open_repository_header(header, load_secret(str(path), None), relay="r")
    assert joiner.algorithm == "chacha20-poly1305"
    assert joiner.object_key("a/b") == creator.object_key("a/b")
    assert joiner.open("obj", creator.seal("obj", b"payload")) == b"payload"
    assert creator.open("obj", joiner.seal("obj", b"back")) == b"back"


def test_two_repositories_with_one_secret_have_different_keys(key_secret: KeySecret) -> None:
    _, one = create_repository_header("aes-256-gcm", key_secret)
    _, two = create_repository_header("aes-256-gcm", key_secret)
    assert one.object_key("x") != two.object_key("x")  # fresh salt per repository


def test_wrong_passphrase_names_the_relay(pass_repo: bytes) -> None:
    with pytest.raises(WrongKeyError) as info:
        open_repository_header(pass_repo, load_secret(None, "wrong horse"), relay="ftp://example/repo")
    assert str(info.value) == "wrong key or passphrase for relay ftp://example/repo"


def test_wrong_key_names_the_relay(key_secret: KeySecret, other_key_secret: KeySecret) -> None:
    header, _ = create_repository_header("aes-256-gcm", key_secret)
    with pytest.raises(WrongKeyError, match="for relay office"):
        open_repository_header(header, other_key_secret, relay="office")


def test_key_where_passphrase_expected_and_reverse(pass_repo: bytes, key_secret: KeySecret) -> None:
    with pytest.raises(WrongKeyError, match="relay r1"):
        open_repository_header(pass_repo, key_secret, relay="r1")
    key_header, _ = create_repository_header("aes-256-gcm", key_secret)
    with pytest.raises(WrongKeyError, match="relay r2"):
        open_repository_header(key_header, load_secret(None, "pw"), relay="r2")


def test_swapped_algorithm_is_detected(pass_repo: bytes, passphrase: KeySecret) -> None:
    with pytest.raises(IntegrityError, match="relay r"):
        open_repository_header(_rewrite(pass_repo, algorithm="blowfish"), passphrase, relay="r")


def test_kdf_downgrade_is_detected(pass_repo: bytes, passphrase: KeySecret) -> None:
    weaker = {"name": "scrypt", "n": CHEAP_KDF.n // 2, "r": CHEAP_KDF.r, "p": CHEAP_KDF.p}
    with pytest.raises(CryptoError):
        open_repository_header(_rewrite(pass_repo, kdf=weaker), passphrase, relay="r")
    with pytest.raises(CryptoError):
        open_repository_header(_rewrite(pass_repo, kdf={"name": "hkdf-sha256"}), passphrase, relay="r")


def test_absurd_kdf_parameters_refused_before_running(pass_repo: bytes, passphrase: KeySecret) -> None:
    """A hostile relay cannot make a client allocate gigabytes in scrypt."""
    huge = {"name": "scrypt", "n": 2**30, "r": 8, "p": 1}
    with pytest.raises(ProtocolError, match="relay r"):
        open_repository_header(_rewrite(pass_repo, kdf=huge), passphrase, relay="r")


def test_every_byte_flip_of_the_header_is_refused(passphrase: KeySecret) -> None:
    header, _ = create_repository_header("aes-256-gcm", passphrase, kdf=KdfParams(n=16, r=1, p=1))
    accepted = []
    for i in range(len(header)):
        altered = bytearray(header)
        altered[i] ^= 0x01
        try:
            open_repository_header(bytes(altered), passphrase, relay="r")
        except (ProtocolError, CryptoError):
            continue
        accepted.append(i)
    assert accepted == []


@pytest.mark.parametrize(
    "header",
    [b"", b"not json", b"[]", b'{"format":"something-else"}', b"\xff\xfe"],
)
def test_malformed_header_is_a_protocol_error_naming_it(header: bytes, passphrase: KeySecret) -> None:
    with pytest.raises(ProtocolError, match="repository header of relay sftp://h/r"):
        open_repository_header(header, passphrase, relay="sftp://h/r")


def test_non_canonical_and_unknown_fields_refused(pass_repo: bytes, passphrase: KeySecret) -> None:
    spaced = json.dumps(_fields(pass_repo), sort_keys=True).encode() + b"\n"
    with pytest.raises(ProtocolError, match="canonical"):
        open_repository_header(spaced, passphrase, relay="r")
    with pytest.raises(ProtocolError, match="unexpected fields"):
        open_repository_header(_rewrite(pass_repo, extra=1), passphrase, relay="r")
    with pytest.raises(ProtocolError, match="unsupported version"):
        open_repository_header(_rewrite(pass_repo, version=2), passphrase, relay="r")
    with pytest.raises(ProtocolError, match="unknown algorithm"):
        open_repository_header(_rewrite(pass_repo, algorithm="rot13"), passphrase, relay="r")


def test_unknown_algorithm_at_creation(key_secret: KeySecret) -> None:
    with pytest.raises(CryptoError, match="rot13"):
        create_repository_header("rot13", key_secret)


def test_algorithm_alias_selection(key_secret: KeySecret) -> None:
    header, _ = create_repository_header("blowfish", key_secret)
    assert open_repository_header(header, key_secret, relay="r").algorithm == "blowfish"
    env = open_repository_header(header, key_secret, relay="r", algorithm="blowfish.blowfish")
    assert env.algorithm == "blowfish.blowfish"
    with pytest.raises(CryptoError, match="encrypted with blowfish, not fernet"):
        open_repository_header(header, key_secret, relay="r", algorithm="fernet")


def test_scrypt_runs_once_per_secret_and_header(
    pass_repo: bytes, passphrase: KeySecret, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_cache()
    calls = []

    def counting(**kwargs: int | bytes) -> object:
        calls.append(kwargs["n"])
        return Scrypt(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(keys_module, "Scrypt", counting)
    for _ in range(3):
        open_repository_header(pass_repo, passphrase, relay="r")
    assert calls == [CHEAP_KDF.n]
    with pytest.raises(WrongKeyError):
        open_repository_header(pass_repo, load_secret(None, "another"), relay="r")
    assert len(calls) == 2
