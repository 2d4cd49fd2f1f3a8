"""Keys and certificates for a real federation, made with `cryptography`.

A private CA signs the SuperLink's TLS certificate (SANs for every host partners dial);
every partner gets an ECDSA key pair in OpenSSH format, the form Flower's SuperNode
authentication reads. The coordinator registers the partners' public keys with the
SuperLink; a SuperNode with any other key is refused. Everything is written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcrm.errors import ConfigError
from fedcrm.privatefiles import write_private  # 0600 from creation, the one implementation

VALID_DAYS = 825  # the longest TLS server-certificate lifetime browsers and most stacks accept


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcrm federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(folder: Path, federation: str) -> tuple[Path, Path]:
    """ca.key + ca.crt (self-signed, CA only)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(f"{federation} CA")).issuer_name(_name(f"{federation} CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA384()))
    return (write_private(folder / "ca.key", _pem_key(key)),
            write_private(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM)))


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def create_server_cert(folder: Path, ca_key_path: Path, ca_cert_path: Path, hosts: list[str]) -> tuple[Path, Path]:
    """superlink.key + superlink.crt, signed by the CA, valid for every name in `hosts`."""
    if not hosts:
        raise ConfigError("the SuperLink certificate needs at least one host (name or IP partners dial)")
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return (write_private(folder / "superlink.key", _pem_key(key)),
            write_private(folder / "superlink.crt", cert.public_bytes(serialization.Encoding.PEM)))


def create_node_key(folder: Path, comment: str) -> tuple[Path, Path]:
    """supernode.key (OpenSSH private) + supernode.pub (OpenSSH public, what gets registered)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return (write_private(folder / "supernode.key", private),
            write_private(folder / "supernode.pub", public + f" {comment}\n".encode()))


def san_hosts(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)
