from pathlib import Path

import grpc
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from gateway.config import Settings
from gateway.tls import ServerCertificates, read_files


def _write(folder: Path, ca: trustme.CA, name: str = "server") -> tuple[str, str]:
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def test_matching_files_are_read(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(tmp_path, ca)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    files = read_files(cert, key, str(tmp_path / "ca.pem"))
    assert files.cert_chain == Path(cert).read_bytes()
    assert files.key == Path(key).read_bytes()
    assert files.client_ca == ca.cert_pem.bytes()
    assert isinstance(files.configuration(), grpc.ServerCertificateConfiguration)
    assert read_files(cert, key, None).client_ca is None


def test_unusable_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(tmp_path, ca)
    _, other_key = _write(tmp_path, ca, "other")
    with pytest.raises(ValueError, match="private key"):
        read_files(cert, other_key, None)  # a key of another certificate
    with pytest.raises(ValueError, match=r"missing\.pem"):
        read_files(cert, str(tmp_path / "missing.pem"), None)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    with pytest.raises(ValueError, match="CA certificates"):
        read_files(cert, key, str(garbage))
    with pytest.raises(ValueError):
        read_files(str(garbage), key, None)


def test_an_encrypted_key_is_refused_rather_than_prompted_for(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(tmp_path, ca)
    private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    Path(key).write_bytes(encrypted)
    with pytest.raises(ValueError, match="private key"):
        read_files(cert, key, None)


def test_plaintext_has_no_certificates() -> None:
    assert ServerCertificates.from_settings(Settings(glance_url="http://g")) is None


def test_reload_hands_new_files_to_the_next_handshake_once(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = _write(tmp_path, ca)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = Settings(
        glance_url="http://g", tls_cert=cert, tls_key=key, tls_client_ca=str(tmp_path / "ca.pem")
    )
    certificates = ServerCertificates.from_settings(settings)
    assert certificates is not None and certificates.mutual
    assert isinstance(certificates.credentials(), grpc.ServerCredentials)
    fetch = certificates._fetch
    assert fetch() is None  # nothing new: gRPC keeps its handshaker

    new_leaf = trustme.CA().issue_cert("127.0.0.1")
    new_leaf.cert_chain_pems[0].write_to_path(cert)
    new_leaf.private_key_pem.write_to_path(key)
    assert certificates.reload()
    assert isinstance(fetch(), grpc.ServerCertificateConfiguration)
    assert fetch() is None

    Path(key).write_text("broken\n")
    assert not certificates.reload()
    assert fetch() is None  # the broken files never reach gRPC
