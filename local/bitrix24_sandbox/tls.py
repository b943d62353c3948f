"""Optional HTTPS for the sandbox: a self-signed certificate for ``127.0.0.1``/``localhost`` and the server context.

Some clients cannot be pointed at plain HTTP: b24pysdk builds ``https://{domain}/rest`` itself. With TLS on, such a
client works unchanged once it trusts ``certificate_files().cert`` (``REQUESTS_CA_BUNDLE`` for requests,
``SSL_CERT_FILE`` for clients built on the ``ssl`` module's default context, such as aiohttp).

The ``cryptography`` package is imported here only, and this module is imported only when TLS is requested, so the
sandbox stays standard-library-only otherwise.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertificateFiles", "certificate_files", "server_context"]

HOSTNAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
VALIDITY = datetime.timedelta(days=3650)

_lock = threading.Lock()
_files: CertificateFiles | None = None


@dataclass(frozen=True)
class CertificateFiles:
    cert: str  # PEM certificate; it is self-signed, so it is also the CA file that clients trust
    key: str  # PEM private key, readable by the owner only (the temp directory is 0700)


def certificate_files() -> CertificateFiles:
    """The certificate and key, generated on first use and reused for the rest of the process."""
    global _files
    with _lock:
        if _files is None:
            _files = _generate()
        return _files


def server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    files = certificate_files()
    context.load_cert_chain(files.cert, files.key)
    return context


def _generate() -> CertificateFiles:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as error:  # pragma: no cover - depends on the environment
        message = "the sandbox's TLS mode needs the 'cryptography' package (pip install cryptography)"
        raise RuntimeError(message) from error

    # P-256: generated in milliseconds, unlike RSA, and accepted by every TLS client we care about.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bitrix24 sandbox (localhost)")])
    now = datetime.datetime.now(datetime.UTC)
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    san = [x509.DNSName(host) for host in HOSTNAMES] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IP_ADDRESSES]
    # Python 3.13 and urllib3 2 verify with VERIFY_X509_STRICT, which wants a critical basicConstraints and a
    # keyUsage on a CA certificate and key identifiers; the one certificate is both the trust anchor and the leaf.
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate a client clock that lags a little
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(key_id, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id), critical=False)
        .sign(key, hashes.SHA256())
    )

    directory = Path(tempfile.mkdtemp(prefix="bitrix24-sandbox-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return CertificateFiles(cert=str(cert_path), key=str(key_path))
