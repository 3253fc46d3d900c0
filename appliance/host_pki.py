"""The appliance's CA for qemu+tls hosts, in HOME/pki.

libvirt's TLS transport wants, on the client side, a folder (pkipath=) holding
cacert.pem, clientcert.pem and clientkey.pem; on the host, libvirtd's CA file,
server certificate and key (/etc/pki/CA/cacert.pem, /etc/pki/libvirt/servercert.pem,
/etc/pki/libvirt/private/serverkey.pem by default). The appliance makes them all:

    HOME/pki/cacert.pem      its CA (EC P-384, ten years)
    HOME/pki/cakey.pem       the CA's key, 0600 (libvirt never reads it)
    HOME/pki/clientcert.pem  the appliance's client certificate (clientAuth)
    HOME/pki/clientkey.pem   its key, 0600

and, for each host, a server certificate for its names and addresses
(`vmctl host trust NAME --address ...`), to be installed there. The host's
libvirtd then accepts only clients with a certificate from this CA, and the
appliance only a server whose certificate from this CA names the address it
dialled. pkipath= is the appliance's to set (appliance/host_access.py): a host
URI from a user may not carry it (appliance/hosturi.py).
"""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance import durable

VALIDITY = datetime.timedelta(days=3650)
CA_CERT, CA_KEY = "cacert.pem", "cakey.pem"
CLIENT_CERT, CLIENT_KEY = "clientcert.pem", "clientkey.pem"
SERVER_CERT, SERVER_KEY = "servercert.pem", "serverkey.pem"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vm-appliance"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common[:64])])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usage(ca: bool) -> x509.KeyUsage:
    # libvirt checks a leaf's usage for digital signature and key encipherment,
    # a CA's for certificate signing (virnettlscontext.c).
    return x509.KeyUsage(digital_signature=not ca, key_encipherment=not ca, key_cert_sign=ca,
                         content_commitment=False, data_encipherment=False,
                         key_agreement=False, crl_sign=ca, encipher_only=False,
                         decipher_only=False)


def _builder(subject: x509.Name, issuer: x509.Name,
             public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))


def _write_private(path: Path, data: bytes) -> None:
    """data into path, 0600 from the start, synced, replacing it in one step (a crash
    leaves the old key or the whole new one, never an empty file)."""
    with durable.replacing(path, 0o600) as out:
        out.write(data)


def _write_public(path: Path, data: bytes) -> None:
    with durable.replacing(path, 0o644) as out:
        out.write(data)


def _load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki_dir / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((pki_dir / CA_KEY).read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki_dir / CA_KEY} is not the EC key this module writes")
    return cert, key


def ensure(pki_dir: Path, appliance_name: str = "vm-appliance") -> Path:
    """The CA and the client pair in pki_dir, made once; pki_dir (libvirt's pkipath)."""
    if (pki_dir / CLIENT_CERT).exists():
        return pki_dir
    pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (pki_dir / CA_CERT).exists():
        key = ec.generate_private_key(ec.SECP384R1())
        name = _name(f"{appliance_name} CA")
        cert = (_builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_usage(ca=True), critical=True)
                .sign(key, hashes.SHA384()))
        _write_private(pki_dir / CA_KEY, _pem_key(key))
        _write_public(pki_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    cert_pem, key_pem = _leaf(pki_dir, f"{appliance_name} client", [], client=True)
    _write_private(pki_dir / CLIENT_KEY, key_pem)
    _write_public(pki_dir / CLIENT_CERT, cert_pem)
    return pki_dir


def _alt_names(addresses: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(address))
    return list(dict.fromkeys(names))


def _leaf(pki_dir: Path, common: str, addresses: list[str], client: bool) -> tuple[bytes, bytes]:
    ca_cert, ca_key = _load_ca(pki_dir)
    key = ec.generate_private_key(ec.SECP384R1())
    purpose = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (_builder(_name(common), ca_cert.subject, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_usage(ca=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if addresses:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(addresses)),
                                        critical=False)
    cert = builder.sign(ca_key, hashes.SHA384())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue_server(pki_dir: Path, out_dir: Path, addresses: list[str]) -> dict[str, str]:
    """A server certificate for a host known by `addresses` (names or IPs, the first
    is its common name), written with the CA certificate into out_dir (the key 0600):
    what the host's libvirtd needs for its TLS listener. Where each file goes."""
    if not addresses:
        raise ValueError("a server certificate needs at least one host name or address")
    ensure(pki_dir)
    cert_pem, key_pem = _leaf(pki_dir, addresses[0], addresses, client=False)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(out_dir / SERVER_KEY, key_pem)
    _write_public(out_dir / SERVER_CERT, cert_pem)
    _write_public(out_dir / CA_CERT, (pki_dir / CA_CERT).read_bytes())
    return {str(out_dir / CA_CERT): "/etc/pki/CA/cacert.pem",
            str(out_dir / SERVER_CERT): "/etc/pki/libvirt/servercert.pem",
            str(out_dir / SERVER_KEY): "/etc/pki/libvirt/private/serverkey.pem"}
