"""Keys and certificates for a real federation, made with `cryptography`, each where it is used.

- The CA (ca.key, ca.crt) signs the SuperLink's TLS certificate and nothing else. It can be
  made and kept on a machine of its own (`create_ca`, `sign_server_csr`): the coordinator
  then holds only ca.crt and sends a certificate signing request (`create_server_csr`).
- The SuperLink's key never leaves the coordinator; its certificate names every host
  partners dial (SANs), and `check_server_cert` proves it matches the key and the CA.
- Each partner makes its SuperNode key pair on its own node (`create_node_key`, via
  `fedcrm partner keygen`) in the OpenSSH form Flower's SuperNode authentication reads, and
  sends only the public key; the coordinator checks it (`read_node_public_key`) and
  registers it with the SuperLink. A SuperNode with any other key is refused.

Private keys are 0600 files in 0700 folders from creation; certificates and public keys,
though public, are written the same way.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcrm.errors import ConfigError
from fedcrm.privatefiles import private_dir, write_private  # 0600 from creation, the one implementation

T = TypeVar("T")

VALID_DAYS = 825  # the longest TLS server-certificate lifetime browsers and most stacks accept
CA_DAYS = 3650
NODE_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}  # NIST curves Flower accepts, ≥ 256 bits
MAX_PUBLIC_KEY_BYTES = 16_384  # an OpenSSH public key line is < 1 KB; anything far bigger is not one


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcrm federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _refuse_overwrite(path: Path, what: str) -> None:
    """A key is never replaced silently: whoever relies on the old one would be cut off."""
    if path.exists():
        raise ConfigError(f"{path} exists: {what} is made once; move it away first if you really mean to replace it")


# ---------------------------------------------------------------- the CA
def create_ca(folder: Path, federation: str) -> tuple[Path, Path]:
    """ca.key + ca.crt (self-signed, CA only), in `folder` (made 0700)."""
    private_dir(folder)
    _refuse_overwrite(folder / "ca.key", "the federation's CA key")
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(f"{federation} CA")).issuer_name(_name(f"{federation} CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA384()))
    return (write_private(folder / "ca.key", _pem_key(key)),
            write_private(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM)))


def _load_pem(path: Path, load: Callable[[bytes], T], what: str, kind: str) -> T:
    """`load` the file, or a ConfigError naming it: missing, or not the `kind` it should be."""
    try:
        return load(Path(path).read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a {kind}: {exc}") from None


def load_ca_cert(path: Path) -> x509.Certificate:
    """A CA certificate, or a ConfigError naming the file."""
    cert = _load_pem(path, x509.load_pem_x509_certificate, "CA certificate", "PEM certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError(f"{path} is not a CA certificate (no basicConstraints CA:TRUE)")
    return cert


def cert_fingerprint(path: Path) -> str:
    """SHA-256 of a certificate, as `openssl x509 -fingerprint -sha256` prints it: what a
    partner compares, over another channel, with the ca.crt it was sent."""
    digest = x509.load_pem_x509_certificate(Path(path).read_bytes()).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


# ---------------------------------------------------------------- the SuperLink's certificate
def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def create_server_csr(folder: Path, hosts: list[str]) -> tuple[Path, Path]:
    """superlink.key (stays here) + superlink.csr (goes to whoever holds the CA key),
    asking for a certificate valid for every name in `hosts`."""
    if not hosts:
        raise ConfigError("the SuperLink certificate needs at least one host (name or IP partners dial)")
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(hosts[0]))
           .add_extension(_san(hosts), critical=False).sign(key, hashes.SHA384()))
    return (write_private(folder / "superlink.key", _pem_key(key)),
            write_private(folder / "superlink.csr", csr.public_bytes(serialization.Encoding.PEM)))


def sign_server_csr(csr_path: Path, ca_key_path: Path, ca_cert_path: Path, out: Path) -> Path:
    """Issue the SuperLink's certificate for a request, on the machine that holds the CA key.
    Only what a TLS server needs is granted (its SANs, serverAuth, not a CA), whatever the
    request asks for."""
    csr = _load_pem(csr_path, x509.load_pem_x509_csr, "certificate signing request",
                    "PEM certificate signing request")
    if not csr.is_signature_valid:
        raise ConfigError(f"{csr_path}: the request's signature does not verify (damaged or altered)")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ConfigError(f"{csr_path} names no host (no subjectAltName): make it with `fedcrm federation init`") from None
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise ConfigError(f"{csr_path}: the SuperLink key must be an EC key")
    ca_cert = load_ca_cert(ca_cert_path)
    try:
        ca_key = serialization.load_pem_private_key(Path(ca_key_path).read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"no CA key at {ca_key_path}: sign on the machine that keeps it") from None
    if ca_key.public_key().public_numbers() != ca_cert.public_key().public_numbers():
        raise ConfigError(f"{ca_key_path} is not the key of {ca_cert_path}")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return write_private(out, cert.public_bytes(serialization.Encoding.PEM))


def create_server_cert(folder: Path, ca_key_path: Path, ca_cert_path: Path, hosts: list[str]) -> tuple[Path, Path]:
    """superlink.key + superlink.crt in one go, when the CA key is on this machine (the
    request stays beside them: signing it again renews the certificate)."""
    key, csr = create_server_csr(folder, hosts)
    return key, sign_server_csr(csr, ca_key_path, ca_cert_path, folder / "superlink.crt")


def check_server_cert(cert_path: Path, key_path: Path, ca_cert_path: Path, host: str) -> None:
    """The SuperLink's certificate is signed by the federation's CA, belongs to its key, is
    valid now and names `host`: checked before a SuperLink starts, so a certificate signed
    elsewhere fails here with the reason rather than in every partner's TLS handshake."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{cert_path} is not a PEM certificate: {exc}") from None
    ca_cert = load_ca_cert(ca_cert_path)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ConfigError(f"{cert_path} is not signed by the federation's CA ({ca_cert_path})") from None
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise ConfigError(f"{cert_path} is not the certificate of {key_path} (signed for another key)")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(f"{cert_path} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
                          f"{cert.not_valid_after_utc:%Y-%m-%d}, not now")
    if host not in san_hosts(cert_path):
        raise ConfigError(f"the SuperLink certificate is not valid for {host} (SANs: {san_hosts(cert_path)})")


def san_hosts(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)


# ---------------------------------------------------------------- SuperNode keys
def create_node_key(folder: Path, comment: str) -> tuple[Path, Path]:
    """supernode.key (OpenSSH private, 0600) + supernode.pub (OpenSSH public, what gets
    registered) in `folder`, made 0700. Run where the SuperNode runs; refuses to replace a
    key pair that exists (the coordinator registered that one)."""
    private_dir(folder)
    _refuse_overwrite(folder / "supernode.key", "this node's key pair")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return (write_private(folder / "supernode.key", private),
            write_private(folder / "supernode.pub", public + f" {comment}\n".encode()))


def read_node_public_key(path: Path) -> str:
    """The one-line OpenSSH public key in `path`, checked as Flower checks it when it is
    registered (an EC key on a NIST curve) and at least 256 bits; a ConfigError naming the
    file says what is wrong otherwise — above all when it is a *private* key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no public key file at {path}")
    if path.stat().st_size > MAX_PUBLIC_KEY_BYTES:
        raise ConfigError(f"{path} is not an OpenSSH public key ({path.stat().st_size} bytes; one is a single short line)")
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{path} is a PRIVATE key: never take a partner's private key. Ask it for the .pub "
                          "file `fedcrm partner keygen` wrote beside it, and, since this key has left its "
                          "machine, for a new key pair")
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    try:
        if len(lines) != 1:
            raise ValueError(f"{len(lines)} lines, expected one")
        key = serialization.load_ssh_public_key(lines[0].encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an OpenSSH public key ({exc}); expected one line "
                          "'ecdsa-sha2-nistp384 AAAA… comment', as `fedcrm partner keygen` writes it") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{path} holds a key of type {type(key).__name__.removesuffix('PublicKey')}; Flower's SuperNode "
                          "authentication needs an ECDSA key (NIST P-256, P-384 or P-521): "
                          "make one with `fedcrm partner keygen`")
    if key.curve.name not in NODE_CURVES:
        raise ConfigError(f"{path}: curve {key.curve.name} is not accepted (use P-256, P-384 or P-521)")
    return lines[0].strip()


def key_fingerprint(public_line: str) -> str:
    """`SHA256:…` of an OpenSSH public key, as `ssh-keygen -l` prints it: what the partner
    and the coordinator read to each other to be sure the registered key is the partner's."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
