#!/usr/bin/env python3
"""Certificates for the TLS captures, with dates and names chosen on purpose (openssl 3.0's
command line cannot set arbitrary validity dates). Writes PEM files into the given folder."""
import datetime
import ipaddress
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

out = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
day = datetime.timedelta(days=1)


def key():
    return ec.generate_private_key(ec.SECP256R1())


def save(name, cert, k):
    with open(f"{out}/{name}.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(f"{out}/{name}.key", "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))


ca_key = key()
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbdiag test CA")])
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
      .public_key(ca_key.public_key()).serial_number(1)
      .not_valid_before(now - 10 * day).not_valid_after(now + 3650 * day)
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .sign(ca_key, hashes.SHA256()))
save("ca", ca, ca_key)


def leaf(name, cn, dns=(), ips=(), before=-10, after=365):
    k = key()
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(ca_name).public_key(k.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now + before * day).not_valid_after(now + after * day))
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    save(name, b.sign(ca_key, hashes.SHA256()), k)


leaf("good", "backend.test", dns=["backend.test"])
leaf("expired", "backend.test", dns=["backend.test"], before=-800, after=-400)
leaf("not-yet-valid", "backend.test", dns=["backend.test"], before=300, after=700)
leaf("wildcard", "*.example.test", dns=["*.example.test"])
leaf("cn-only", "backend.test")
leaf("ip", "10.70.0.2", ips=["10.70.0.2"])
