#!/usr/bin/env python3
"""Helpers for captures/make-transport-regressions.sh.

  regression_peers.py bigcert DIR            an expired certificate whose SAN list makes a
                                             ~340 KB chain (DIR/big.pem, DIR/big.key), signed
                                             by DIR/ca.pem (from make_certs.py)
  regression_peers.py rsa-expired DIR        an expired RSA certificate (DIR/rsa-expired.pem)
  regression_peers.py sslv2-hello HOST PORT  a client that opens with an SSLv2-format
                                             ClientHello (RFC 5246 E.2), reads the server's
                                             flight up to ServerHelloDone and closes
  regression_peers.py tls12-hello HOST PORT SNI
                                             a client that sends a plain TLS 1.2 ClientHello,
                                             reads the whole server flight (however large),
                                             and closes: OpenSSL clients refuse chains over
                                             100 KB before reading them
"""
import datetime
import os
import socket
import struct
import sys
import time


def bigcert(out):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = x509.load_pem_x509_certificate(open(f"{out}/ca.pem", "rb").read())
    ca_key = serialization.load_pem_private_key(open(f"{out}/ca.key", "rb").read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    k = ec.generate_private_key(ec.SECP256R1())
    # 13,000 names of ~26 DER bytes each: a single Certificate message of about 340 KB.
    names = [x509.DNSName("backend.test")] + [
        x509.DNSName(f"host{i:05d}.pool.backend.test") for i in range(13000)]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backend.test")]))
            .issuer_name(ca.subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - 800 * day).not_valid_after(now - 400 * day)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(f"{out}/big.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(f"{out}/big.key", "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    print(f"big certificate: {len(cert.public_bytes(serialization.Encoding.DER))} bytes DER")


def rsa_expired(out):
    """An expired RSA certificate: an SSLv2-format hello has no extensions, so no signature
    algorithms; RSA key exchange needs no signature at all."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    ca = x509.load_pem_x509_certificate(open(f"{out}/ca.pem", "rb").read())
    ca_key = serialization.load_pem_private_key(open(f"{out}/ca.key", "rb").read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backend.test")]))
            .issuer_name(ca.subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - 800 * day).not_valid_after(now - 400 * day)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("backend.test")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(f"{out}/rsa-expired.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(f"{out}/rsa-expired.key", "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))


def read_flight(sock, deadline):
    """Reads TLS records until the server's ServerHelloDone (type 14) or an alert."""
    buf = b""
    hs = b""
    while time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            return
        buf += chunk
        while len(buf) >= 5:
            kind, _, length = struct.unpack("!BHH", buf[:5])
            if len(buf) < 5 + length:
                break
            body, buf = buf[5:5 + length], buf[5 + length:]
            if kind == 21:
                return
            if kind == 22:
                hs += body
                while len(hs) >= 4:
                    n = int.from_bytes(hs[1:4], "big")
                    if len(hs) < 4 + n:
                        break
                    t, hs = hs[0], hs[4 + n:]
                    if t == 14:
                        return


def sslv2_hello(host, port):
    # Cipher specs are 3 bytes; TLS suites are 0x00 followed by the two-byte code.
    suites = [0x002f, 0x0035, 0x009c]
    specs = b"".join(b"\x00" + s.to_bytes(2, "big") for s in suites)
    challenge = os.urandom(16)
    body = (b"\x01" + b"\x03\x03" + len(specs).to_bytes(2, "big") + b"\x00\x00"
            + len(challenge).to_bytes(2, "big") + specs + challenge)
    record = (0x8000 | len(body)).to_bytes(2, "big") + body
    s = socket.create_connection((host, int(port)), timeout=1)
    s.sendall(record)
    read_flight(s, time.time() + 3)
    s.close()


def ext(kind, data):
    return kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def tls12_hello(host, port, sni):
    name = sni.encode()
    exts = (ext(0, (len(name) + 3).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name)
            + ext(10, b"\x00\x04\x00\x1d\x00\x17")          # x25519, secp256r1
            + ext(11, b"\x01\x00")                          # uncompressed points
            + ext(13, b"\x00\x06\x04\x03\x08\x04\x04\x01"))  # ecdsa_p256_sha256, pss, rsa
    suites = b"".join(s.to_bytes(2, "big") for s in [0xc02b, 0xc02f, 0xc009, 0xc013])
    hello = (b"\x03\x03" + os.urandom(32) + b"\x00" + len(suites).to_bytes(2, "big") + suites
             + b"\x01\x00" + len(exts).to_bytes(2, "big") + exts)
    msg = b"\x01" + len(hello).to_bytes(3, "big") + hello
    record = b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg
    s = socket.create_connection((host, int(port)), timeout=1)
    s.sendall(record)
    read_flight(s, time.time() + 5)
    s.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"bigcert": bigcert, "rsa-expired": rsa_expired, "sslv2-hello": sslv2_hello, "tls12-hello": tls12_hello}[cmd](*args)
