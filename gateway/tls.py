"""TLS for counter listeners: the gateway's certificate, and banks' client certificates.

With ``tls_client_ca_file`` a listener requires a client certificate signed by that CA; a bank
whose configuration names ``client_cert_subject`` may then connect only with a certificate
whose subject common name is exactly that.
"""
from __future__ import annotations

from cryptography.x509.oid import NameOID
from twisted.internet import ssl


def server_options(listener) -> ssl.CertificateOptions:
    with open(listener.tls_key_file, "rb") as key_file, open(listener.tls_cert_file, "rb") as cert_file:
        own = ssl.PrivateCertificate.loadPEM(key_file.read() + cert_file.read())
    if not listener.tls_client_ca_file:
        return ssl.CertificateOptions(privateKey=own.privateKey.original, certificate=own.original)
    with open(listener.tls_client_ca_file, "rb") as ca_file:
        ca = ssl.Certificate.loadPEM(ca_file.read())
    return ssl.CertificateOptions(privateKey=own.privateKey.original, certificate=own.original,
                                  trustRoot=ssl.trustRootFromCertificates([ca]))


def peer_common_name(transport) -> str | None:
    """The subject CN of the peer's certificate, or None (no TLS, or no certificate)."""
    get = getattr(transport, "getPeerCertificate", None)
    certificate = get() if get else None
    if certificate is None:
        return None
    names = certificate.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def banks_certified(candidates, subject: str | None, required_subject) -> frozenset[str]:
    """The candidate banks this certificate may speak for: those that name no subject, and those
    whose subject is the certificate's."""
    return frozenset(b for b in candidates if not required_subject(b) or required_subject(b) == subject)
