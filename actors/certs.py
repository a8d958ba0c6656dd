"""A certificate authority and one certificate per actor, for the TLS transport.

Every actor (parties, provider, coordinator) gets an EC P-256 key and a certificate whose
common name (and DNS subject alternative name) is the actor's name, signed by one CA that
every actor trusts. The TLS transport authenticates both ends of every connection against
that CA and takes the peer's name from its certificate; a frame never names its sender.

Command line (for a deployment: run once, then copy ``ca.pem`` and each actor's own
``<name>.pem``/``<name>.key`` to its host; the CA key stays where it was made)::

    python -m actors.certs OUT_DIR alice bob james coordinator [--host alice=10.0.0.1 ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .names import check_name


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where one actor's certificate and key are."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a key re-issued over an older, looser file
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_ca(
    common_name: str = "smpc-train cluster CA", days: int = 30
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh CA key and self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    actor: str,
    host: str | None = None,
    days: int = 30,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a certificate for ``actor`` (client and server use), signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(actor)]
    if host:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(actor))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_certs(
    out: str | Path,
    actors: Sequence[str],
    hosts: Mapping[str, str] | None = None,
    days: int = 30,
    ca_name: str = "smpc-train cluster CA",
) -> dict[str, CertPaths]:
    """Write ``ca.pem`` (and ``ca.key``) and ``<actor>.pem``/``<actor>.key`` for each actor
    into ``out``; returns the paths by actor (the CA under ``"ca"``, its key as ``key``)."""
    for actor in actors:
        check_name(actor)  # names files; "ca" would overwrite the CA's
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(ca_name, days)
    (root / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, root / "ca.key")
    paths = {"ca": CertPaths(root / "ca.pem", root / "ca.key")}
    for actor in actors:
        key, cert = issue(ca_key, ca_cert, actor, (hosts or {}).get(actor), days)
        (root / f"{actor}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, root / f"{actor}.key")
        paths[actor] = CertPaths(root / f"{actor}.pem", root / f"{actor}.key")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Make a cluster CA and one certificate per actor (EC P-256)."
    )
    ap.add_argument("out", help="output folder")
    ap.add_argument("actors", nargs="+", help="actor names: parties, provider, coordinator")
    ap.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME=HOST",
        help="also put HOST (IP or DNS name) in NAME's certificate",
    )
    ap.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    args = ap.parse_args(argv)
    hosts = dict(h.split("=", 1) for h in args.host)
    try:
        paths = write_certs(args.out, args.actors, hosts, args.days)
    except ValueError as exc:
        ap.error(str(exc))
    for name, p in paths.items():
        print(f"{name:<12} {p.cert}  {p.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
