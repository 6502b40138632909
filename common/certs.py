"""A private certificate authority in one folder: Argo's (``argo certs init``, ``argo certs site``)
and a site database's (``balsam init --listen``, in ``SITE/db/tls``).

DIR holds ``ca.pem`` / ``ca.key`` (the authority), ``server.pem`` / ``server.key`` (the server's
certificate, for localhost, 127.0.0.1 and the hosts given) and ``sites/NAME.pem`` / ``NAME.key``
(client certificates for mutual TLS). Private keys are written mode 600. Clients trust ``ca.pem``.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from balsam.errors import BalsamError
from balsam.private_files import read_private, write_private
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _save_key(path: Path, key) -> None:
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Balsam Argo"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(days: float, not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)  # a little clock skew
    return start, not_after or start + timedelta(days=days)


def init_ca(folder: Path, hosts: list[str] = (), days: float = 825, not_before: datetime | None = None,
            not_after: datetime | None = None, authority: str = "Argo CA") -> Path:  # fmt: skip
    """Create the authority named ``authority`` (unless DIR already has one) and issue the server's certificate."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "ca.pem").exists():
        key = _key()
        start = datetime.now(UTC) - timedelta(minutes=5)
        cert = (
            x509.CertificateBuilder().subject_name(_name(authority)).issuer_name(_name(authority)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        _save_key(folder / "ca.key", key)
        (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    _issue(folder, "server", names, ExtendedKeyUsageOID.SERVER_AUTH, days, not_before, not_after)
    return folder


def issue_client(folder: Path, name: str, days: float = 825, not_before: datetime | None = None,
                 not_after: datetime | None = None) -> tuple[Path, Path]:  # fmt: skip
    """A client certificate (for mutual TLS) named ``name``: DIR/sites/NAME.pem and NAME.key."""
    if not name or "/" in name:
        raise BalsamError(f"bad certificate name {name!r}")
    return _issue(Path(folder), f"sites/{name}", [x509.DNSName(name)], ExtendedKeyUsageOID.CLIENT_AUTH, days, not_before, not_after)


def _issue(folder: Path, stem: str, names, usage, days, not_before, not_after) -> tuple[Path, Path]:
    try:
        ca_key = serialization.load_pem_private_key(read_private(folder / "ca.key").encode(), None)
        ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    except FileNotFoundError:
        raise BalsamError(f"{folder} holds no certificate authority (ca.pem and ca.key); make one with `argo certs init --dir {folder}`") from None
    key = _key()
    start, end = _validity(days, not_before, not_after)
    cert = (
        x509.CertificateBuilder().subject_name(_name(stem.rsplit("/", 1)[-1])).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem, key_file = folder / f"{stem}.pem", folder / f"{stem}.key"
    _save_key(key_file, key)
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pem, key_file
