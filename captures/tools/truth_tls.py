#!/usr/bin/env python3
"""Writes truth files for the TLS captures; frames come from tshark's TLS dissector."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from truth import write  # noqa: E402

TLS_KINDS = ["tls_cert_expired", "tls_sni_mismatch", "tls_handshake_failure", "tls_no_sni",
             "tls_cert_unverifiable"]
NOISE = ["handshake_refused", "syn_unanswered", "packet_loss", "malformed_request",
         "malformed_response", "http_on_tls_port"]


def frames(path, filt):
    out = subprocess.run(["tshark", "-r", path, "-Y", filt, "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def main(out):
    p = lambda n: os.path.join(out, n + ".pcap")
    hello = lambda f: frames(p(f), "tls.handshake.type == 1")
    cert = lambda f: frames(p(f), "tls.handshake.type == 11")
    alert = lambda f: frames(p(f), "tls.record.content_type == 21")
    others = lambda *keep: [k for k in TLS_KINDS if k not in keep] + NOISE

    write(out, "tls-expired.pcap", "client",
          "openssl s_server presents a certificate (made with Python's cryptography package) that expired about 400 days before the capture; openssl s_client completes a TLS 1.2 handshake without checking it.",
          [{"kind": "tls_cert_expired", "status": 502, "server_port": 9443, "frames": cert("tls-expired")[:1]}],
          others("tls_cert_expired"))
    write(out, "tls-not-yet-valid.pcap", "client",
          "The same with a certificate whose validity starts about 300 days after the capture.",
          [{"kind": "tls_cert_expired", "status": 502, "server_port": 9444, "frames": cert("tls-not-yet-valid")[:1]}],
          others("tls_cert_expired"))
    write(out, "tls-wildcard.pcap", "client",
          "A *.example.test certificate: the first connection asks for a.example.test (covered), the second for a.b.example.test (a wildcard covers one label only).",
          [{"kind": "tls_sni_mismatch", "status": 502, "server_port": 9445, "frames": [hello("tls-wildcard")[1], cert("tls-wildcard")[1]]}],
          others("tls_sni_mismatch"))
    write(out, "tls-cn-only.pcap", "client",
          "A certificate with CN=backend.test and no subjectAltName: SNI backend.test is covered through the CN fallback, SNI other.test is not.",
          [{"kind": "tls_sni_mismatch", "status": 502, "server_port": 9446, "frames": [hello("tls-cn-only")[1], cert("tls-cn-only")[1]]}],
          others("tls_sni_mismatch"))
    write(out, "tls-ip-sni.pcap", "client",
          "A certificate whose only name is the IP address 10.70.0.2; s_client sends the IP address as SNI: 10.70.0.2 is covered, 10.70.0.9 is not.",
          [{"kind": "tls_sni_mismatch", "status": 502, "server_port": 9447, "frames": [hello("tls-ip-sni")[1], cert("tls-ip-sni")[1]]}],
          others("tls_sni_mismatch"))
    write(out, "tls-version-mismatch.pcap", "client",
          "openssl s_server accepts only TLS 1.3; s_client offers only TLS 1.2; the server answers with a fatal protocol_version alert.",
          [{"kind": "tls_handshake_failure", "status": 502, "server_port": 9448, "frames": alert("tls-version-mismatch")[:1]}],
          others("tls_handshake_failure"))
    write(out, "tls-client-rejects-cert.pcap", "client",
          "curl does not trust the private CA that issued the server's certificate and aborts the TLS 1.2 handshake with a fatal unknown_ca alert.",
          [{"kind": "tls_handshake_failure", "status": 502, "server_port": 9449, "frames": alert("tls-client-rejects-cert")[:1]}],
          others("tls_handshake_failure"), also=["connection_reset"])
    write(out, "tls-no-sni.pcap", "client",
          "openssl s_client -noservername: a TLS 1.2 ClientHello without SNI; the server presents its only certificate and the handshake completes.",
          [{"kind": "tls_no_sni", "server_port": 9452, "frames": hello("tls-no-sni")[:1]}],
          ["tls_cert_expired", "tls_sni_mismatch", "tls_handshake_failure", "tls_cert_unverifiable"] + NOISE)
    write(out, "tls12-healthy.pcap", "client",
          "curl trusts the CA and completes a TLS 1.2 handshake with SNI backend.test against a certificate that covers it. Healthy.",
          [], TLS_KINDS + NOISE + ["connection_reset"], healthy=True)
    write(out, "tls13-healthy.pcap", "client",
          "A healthy TLS 1.3 exchange: the certificate is encrypted, so it can only be noted as unverifiable (info).",
          [{"kind": "tls_cert_unverifiable", "server_port": 9451}],
          ["tls_cert_expired", "tls_sni_mismatch", "tls_handshake_failure", "tls_no_sni"] + NOISE + ["connection_reset"],
          healthy=True)


if __name__ == "__main__":
    main(sys.argv[1])
