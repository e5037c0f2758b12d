"""The credentials a throw-away kube-apiserver needs, generated fresh for every control plane.

A CA and a serving certificate it signs (so clients verify TLS for real instead of skipping it), a
service-account signing key (kube-apiserver refuses to start without one), and a bearer token for an
admin in ``system:masters`` (the simplest credential kubectl and the Python client both accept).
Elliptic-curve keys: generating them takes milliseconds, where RSA would cost a noticeable part of
the start-up time on a busy 2-core machine.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Written into the token auth file; the user kube-apiserver authenticates the token as.
ADMIN_USER = "shardlease-admin"


@dataclass(frozen=True)
class Credentials:
    """Paths (all under one directory) and the admin token."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    service_account_key_file: Path
    service_account_public_file: Path
    token_file: Path
    token: str
    #: Tokens of the further users asked for (user name -> token), in the same token file.
    user_tokens: dict[str, str]
    #: A client certificate in ``system:masters`` kube-apiserver presents to kubelets (``kubectl logs``).
    kubelet_client_cert_file: Path
    kubelet_client_key_file: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def generate(directory: Path, hosts: tuple[str, ...],
             users: Mapping[str, Sequence[str]] | None = None) -> Credentials:
    """Create the CA, the serving certificate for ``hosts`` (IPs or DNS names), the
    service-account key, a client certificate for kubelet connections and the token file in
    ``directory``; ``users`` (name -> groups) get a token each besides the admin, so each component
    of a node (kubelet, kube-proxy, ...) runs as the user Kubernetes' built-in roles are bound to."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    not_before = now - _dt.timedelta(minutes=5)  # tolerate a little clock skew
    not_after = now + _dt.timedelta(days=7)

    def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shardlease-controlplane-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # keep order, drop repeats
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name).public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]))
        .issuer_name(ca_name).public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    service_account_key = ec.generate_private_key(ec.SECP256R1())
    token = secrets.token_urlsafe(32)
    user_tokens = {name: secrets.token_urlsafe(32) for name in (users or {})}

    creds = Credentials(
        ca_file=directory / "ca.crt",
        cert_file=directory / "apiserver.crt",
        key_file=directory / "apiserver.key",
        service_account_key_file=directory / "service-account.key",
        service_account_public_file=directory / "service-account.pub",
        token_file=directory / "tokens.csv",
        token=token,
        user_tokens=user_tokens,
        kubelet_client_cert_file=directory / "kubelet-client.crt",
        kubelet_client_key_file=directory / "kubelet-client.key",
    )
    creds.kubelet_client_cert_file.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(creds.kubelet_client_key_file, private_pem(client_key))
    creds.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    creds.cert_file.write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(creds.key_file, private_pem(serving_key))
    _write_private(creds.service_account_key_file, private_pem(service_account_key))
    # kube-apiserver reads verification keys as PUBLIC KEY (or RSA/EC private key) blocks only.
    creds.service_account_public_file.write_bytes(service_account_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    # token,user,uid,"group1,group2": kube-apiserver's static token file format.
    lines = [f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"']
    for name, groups in (users or {}).items():
        line = f"{user_tokens[name]},{name},{name}"
        lines.append(line + f',"{",".join(groups)}"' if groups else line)
    _write_private(creds.token_file, ("\n".join(lines) + "\n").encode())
    return creds
