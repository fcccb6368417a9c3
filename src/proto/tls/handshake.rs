//! TLS handshake messages that matter for diagnosis: ClientHello (SNI, offered versions, ALPN),
//! ServerHello (chosen version, including `supported_versions` for TLS 1.3), and Certificate
//! (TLS 1.0-1.2). A small reader of our own: every length is checked against the bytes present.

/// A bounds-checked cursor over a byte slice.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, at: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.data.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn rest(&mut self) -> &'a [u8] {
        let r = &self.data[self.at.min(self.data.len())..];
        self.at = self.data.len();
        r
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientHello {
    pub legacy_version: u16,
    pub sni: Option<String>,
    pub versions: Vec<u16>,
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerHello {
    /// The negotiated version (from `supported_versions` when present).
    pub version: u16,
    /// A HelloRetryRequest is a ServerHello with a special random.
    pub retry_request: bool,
}

const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

fn extensions(r: &mut Reader<'_>) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(block) = r.vec16() else { return out };
    let mut ext = Reader::new(block);
    while let (Some(kind), Some(body)) = (ext.u16(), ext.vec16()) {
        out.push((kind, body.to_vec()));
    }
    out
}

pub fn client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16()?;
    r.take(32)?;
    r.vec8()?;
    r.vec16()?;
    r.vec8()?;
    let mut hello = ClientHello {
        legacy_version,
        ..ClientHello::default()
    };
    for (kind, data) in extensions(&mut r) {
        let mut e = Reader::new(&data);
        match kind {
            0 => {
                let mut list = Reader::new(e.vec16().unwrap_or(&[]));
                while let (Some(name_type), Some(name)) = (list.u8(), list.vec16()) {
                    if name_type == 0 {
                        hello.sni = Some(String::from_utf8_lossy(name).into_owned());
                        break;
                    }
                }
            }
            16 => {
                let mut list = Reader::new(e.vec16().unwrap_or(&[]));
                while let Some(p) = list.vec8() {
                    hello.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            43 => {
                let mut list = Reader::new(e.vec8().unwrap_or(&[]));
                while let Some(v) = list.u16() {
                    hello.versions.push(v);
                }
            }
            _ => {}
        }
    }
    if hello.versions.is_empty() {
        hello.versions.push(legacy_version);
    }
    Some(hello)
}

/// An SSLv2-compatible ClientHello (RFC 5246 E.2) from its message type byte on: the version it
/// offers is the highest it speaks; it has no extensions.
pub fn sslv2_client_hello(msg: &[u8]) -> Option<ClientHello> {
    let mut r = Reader::new(msg);
    if r.u8()? != 1 {
        return None;
    }
    let version = r.u16()?;
    let ciphers = r.u16()? as usize;
    let session = r.u16()? as usize;
    let challenge = r.u16()? as usize;
    // Cipher specs are 3 bytes each; the session id is empty or 16 bytes, the challenge 16 to
    // 32 (RFC 6101 E); and nothing may follow them.
    if ciphers == 0
        || !ciphers.is_multiple_of(3)
        || !(session == 0 || session == 16)
        || !(16..=32).contains(&challenge)
        || 9 + ciphers + session + challenge != msg.len()
    {
        return None;
    }
    r.take(ciphers)?;
    r.take(session)?;
    r.take(challenge)?;
    Some(ClientHello {
        legacy_version: version,
        sni: None,
        versions: vec![version],
        alpn: Vec::new(),
    })
}

pub fn server_hello(body: &[u8]) -> Option<ServerHello> {
    let mut r = Reader::new(body);
    let legacy = r.u16()?;
    let random = r.take(32)?;
    r.vec8()?;
    r.u16()?;
    r.u8()?;
    let mut version = legacy;
    for (kind, data) in extensions(&mut r) {
        if kind == 43 && data.len() == 2 {
            version = u16::from_be_bytes([data[0], data[1]]);
        }
    }
    Some(ServerHello {
        version,
        retry_request: random == HRR_RANDOM,
    })
}

/// The DER certificates of a TLS 1.0-1.2 Certificate message, leaf first.
pub fn certificates(body: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut r = Reader::new(body);
    let Some(total) = r.u24() else {
        return Vec::new();
    };
    let mut list = Reader::new(r.take(total).unwrap_or_else(|| r.rest()));
    let mut out = Vec::new();
    while out.len() < max {
        let Some(len) = list.u24() else { break };
        let Some(der) = list.take(len) else { break };
        out.push(der.to_vec());
    }
    out
}

pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        v if v & 0x0f0f == 0x0a0a => "GREASE".into(),
        v => format!("0x{v:04x}"),
    }
}

pub fn alert_name(code: u8) -> String {
    match code {
        0 => "close_notify".into(),
        10 => "unexpected_message".into(),
        20 => "bad_record_mac".into(),
        22 => "record_overflow".into(),
        40 => "handshake_failure".into(),
        42 => "bad_certificate".into(),
        43 => "unsupported_certificate".into(),
        44 => "certificate_revoked".into(),
        45 => "certificate_expired".into(),
        46 => "certificate_unknown".into(),
        47 => "illegal_parameter".into(),
        48 => "unknown_ca".into(),
        49 => "access_denied".into(),
        50 => "decode_error".into(),
        51 => "decrypt_error".into(),
        70 => "protocol_version".into(),
        71 => "insufficient_security".into(),
        80 => "internal_error".into(),
        86 => "inappropriate_fallback".into(),
        90 => "user_canceled".into(),
        109 => "missing_extension".into(),
        110 => "unsupported_extension".into(),
        112 => "unrecognized_name".into(),
        116 => "certificate_required".into(),
        120 => "no_application_protocol".into(),
        n => format!("alert {n}"),
    }
}

pub fn message_name(kind: u8) -> &'static str {
    match kind {
        1 => "ClientHello",
        2 => "ServerHello",
        4 => "NewSessionTicket",
        8 => "EncryptedExtensions",
        11 => "Certificate",
        12 => "ServerKeyExchange",
        13 => "CertificateRequest",
        14 => "ServerHelloDone",
        15 => "CertificateVerify",
        16 => "ClientKeyExchange",
        20 => "Finished",
        _ => "handshake message",
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut b = vec![0x03, 0x03];
        b.extend([7u8; 32]);
        b.push(0);
        b.extend([0, 2, 0x13, 0x01]);
        b.extend([1, 0]);
        b.extend((exts.len() as u16).to_be_bytes());
        b.extend(exts);
        b
    }

    #[test]
    fn test_client_hello_sni_versions_alpn() {
        let mut exts = Vec::new();
        // server_name: list(len 14) [type 0, name len 11, "example.com"]
        exts.extend([0, 0, 0, 16, 0, 14, 0, 0, 11]);
        exts.extend(b"example.com");
        exts.extend([0, 43, 0, 5, 4, 0x03, 0x04, 0x03, 0x03]);
        exts.extend([0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
        let h = client_hello(&hello(&exts)).unwrap();
        assert_eq!(h.sni.as_deref(), Some("example.com"));
        assert_eq!(h.versions, vec![0x0304, 0x0303]);
        assert_eq!(h.alpn, vec!["h2"]);
    }

    #[test]
    fn test_truncated_hello_is_none_not_panic() {
        let full = hello(&[0, 0, 0, 16, 0, 14, 0, 0, 11]);
        for cut in 0..full.len() {
            let _ = client_hello(&full[..cut]);
            let _ = server_hello(&full[..cut]);
            let _ = certificates(&full[..cut], 4);
        }
    }

    #[test]
    fn test_server_hello_tls13_by_supported_versions() {
        let mut b = vec![0x03, 0x03];
        b.extend([1u8; 32]);
        b.push(0);
        b.extend([0x13, 0x01, 0]);
        let exts = [0u8, 43, 0, 2, 0x03, 0x04];
        b.extend((exts.len() as u16).to_be_bytes());
        b.extend(exts);
        let s = server_hello(&b).unwrap();
        assert_eq!(s.version, 0x0304);
        assert!(!s.retry_request);
    }
}
