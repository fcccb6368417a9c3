//! TLS over the reassembled streams, detected by content: records, handshake messages that
//! span records and segments, alerts. It keeps what the diagnosis needs (SNI, versions, the
//! server's certificates, alerts, how far the handshake got) and stops reading a direction
//! once it is encrypted.

pub mod cert;
pub mod handshake;

use crate::flow::{Role, Seen};
use handshake::{ClientHello, ServerHello};

/// Largest TLS record body (2^14 plus expansion allowance).
const MAX_RECORD: usize = 18_432;
/// Handshake bytes buffered per direction. A Certificate message spans as many records as its
/// chain needs (chains of several hundred KB exist: long SAN lists, many intermediates); this
/// covers them and stays bounded, and the capture-wide --max-protocol-buffers budget applies
/// on top.
const MAX_HANDSHAKE_BUFFER: usize = 1 << 20;
/// A message buffer this large is given back once the message is done, so an idle connection
/// does not keep holding (and counting) a certificate chain's worth of capacity.
const KEEP_HANDSHAKE_CAPACITY: usize = 16 * 1024;
/// Record kind for an SSLv2-format ClientHello (not a TLS content type).
const SSLV2_HELLO: u8 = 0x80;
const MAX_CERTIFICATES: usize = 6;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    pub from: Role,
    pub at: Seen,
    pub fatal: bool,
    pub description: u8,
    /// The last handshake step seen before it, e.g. "ServerHello (server)".
    pub after: String,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Direction {
    header: Vec<u8>,
    /// Bytes left of the current record, and whether they are kept (handshake, alert).
    left: usize,
    kind: u8,
    record: Vec<u8>,
    handshake: Vec<u8>,
    handshake_at: Option<Seen>,
    encrypted: bool,
    off: bool,
    /// A record header has been read in this direction.
    seen_record: bool,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TlsConn {
    client: Direction,
    server: Direction,
    pub client_hello: Option<(ClientHello, Seen)>,
    pub server_hello: Option<(ServerHello, Seen)>,
    /// DER certificates from the server, leaf first, and the frame where the message ended.
    pub certificates: Vec<Vec<u8>>,
    pub certificate_at: Option<Seen>,
    pub alerts: Vec<Alert>,
    pub last_step: String,
    /// Application data (or an encrypted handshake after TLS 1.3's ServerHello) in each
    /// direction: the handshake got past its cleartext part.
    pub client_encrypted: Option<Seen>,
    pub server_encrypted: Option<Seen>,
    pub client_app_data: bool,
    pub server_app_data: bool,
    /// Application-data records in each direction (TLS 1.3's encrypted handshake included).
    pub client_app_records: u32,
    pub server_app_records: u32,
    /// The client sent a handshake record after its ChangeCipherSpec: TLS 1.2's encrypted
    /// Finished (TLS 1.3 wraps its Finished in an application-data record).
    pub client_encrypted_finished: bool,
    /// Set when the stream stopped looking like TLS (SSLv2 records, garbage); a warning, not a
    /// finding.
    pub not_tls: Option<String>,
    /// The client's first record was an SSLv2-format ClientHello (read, then TLS records).
    pub sslv2_client_hello: bool,
    /// The server answered in SSLv2 records: an SSLv2 handshake, which is not followed.
    pub server_sslv2: bool,
}

impl TlsConn {
    /// True when the client's first bytes look like a TLS handshake record, or an SSLv2-style
    /// hello (which is then reported as a warning, not followed).
    pub fn looks_like_tls(first: &[u8]) -> bool {
        let tls = first.len() >= 2 && first[0] == 0x16 && first[1] == 0x03;
        let sslv2 = first.len() >= 3 && first[0] & 0x80 != 0 && first[2] == 0x01;
        tls || sslv2
    }

    /// The server answered with something that is not TLS (an SSLv2 server speaks a
    /// protocol, just not one that is followed).
    pub fn server_not_tls(&self) -> bool {
        self.server.off
            && !self.server_sslv2
            && self
                .not_tls
                .as_deref()
                .is_some_and(|w| w.starts_with("server"))
    }

    /// The handshake finished: both sides moved on to encrypted traffic.
    pub fn established(&self) -> bool {
        let tls13 = self
            .server_hello
            .as_ref()
            .is_some_and(|(s, _)| s.version == 0x0304);
        if tls13 {
            self.client_app_data && self.server_encrypted.is_some()
        } else {
            self.client_encrypted.is_some() && self.server_encrypted.is_some()
        }
    }

    /// The handshake finished, as far as either direction shows, even when the analysis lost
    /// the other one (a capture gap, a flight over the buffer bound, the buffer budget): a TLS
    /// 1.2 client sends application data only after the server's Finished, and a TLS 1.3
    /// client's second encrypted record follows its own Finished. A TLS 1.2 server's
    /// application data likewise follows the whole handshake.
    pub fn handshake_completed(&self) -> bool {
        if self.established() {
            return true;
        }
        let version = self.server_hello.as_ref().map(|(s, _)| s.version);
        match version {
            Some(0x0304) => self.client_app_records >= 2,
            Some(_) => {
                (self.client.encrypted && self.client_app_records >= 1)
                    || (self.server.encrypted && self.server_app_records >= 1)
            }
            // The ServerHello was not read: the client's own records tell the version.
            None => {
                (self.client_encrypted_finished && self.client_app_records >= 1)
                    || self.client_app_records >= 2
            }
        }
    }

    /// Bytes this connection holds in buffers (records and handshake messages in progress).
    pub fn buffered_bytes(&self) -> usize {
        [&self.client, &self.server]
            .iter()
            .map(|d| d.record.capacity() + d.handshake.capacity() + d.header.capacity())
            .sum::<usize>()
            + self.certificates.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Drops the buffers in progress because the capture-wide budget ran out; what was already
    /// learnt (hello, certificates) stays.
    pub fn shed_buffers(&mut self) {
        for dir in [&mut self.client, &mut self.server] {
            dir.record = Vec::new();
            dir.handshake = Vec::new();
            dir.off = true;
        }
    }

    /// Bytes missing from the capture: this direction's records cannot be followed any more.
    pub fn on_gap(&mut self, from: Role) {
        match from {
            Role::Client => self.client.off = true,
            Role::Server => self.server.off = true,
        }
    }

    pub fn on_data(&mut self, from: Role, bytes: &[u8], at: Seen) {
        let mut data = bytes;
        while !data.is_empty() {
            let dir = match from {
                Role::Client => &mut self.client,
                Role::Server => &mut self.server,
            };
            if dir.off {
                return;
            }
            if dir.left == 0 {
                let need = 5 - dir.header.len();
                let take = need.min(data.len());
                dir.header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if dir.header.len() < 5 {
                    return;
                }
                let h = std::mem::take(&mut dir.header);
                let first_record = !dir.seen_record;
                dir.seen_record = true;
                // An SSLv2-compatible ClientHello (a 2-byte header with the high bit set, then
                // message type 1): clients that still speak SSLv2 open with it and go on in
                // TLS records, so it is read and the server's TLS flight is followed as usual.
                let v2_len = (((h[0] & 0x7f) as usize) << 8) | h[1] as usize;
                let v2_version = (h[3] == 0 && h[4] == 2) || h[3] == 3;
                if from == Role::Client
                    && first_record
                    && h[0] & 0x80 != 0
                    && h[2] == 1
                    && v2_version
                    && (9..=MAX_RECORD).contains(&v2_len)
                {
                    dir.kind = SSLV2_HELLO;
                    dir.left = v2_len - 3;
                    dir.record.clear();
                    dir.record.extend_from_slice(&h[2..5]);
                    continue;
                }
                let len = u16::from_be_bytes([h[3], h[4]]) as usize;
                if !(20..=24).contains(&h[0]) || h[1] != 3 || len > MAX_RECORD || len == 0 {
                    let why = if h[0] & 0x80 != 0 {
                        "an SSLv2-style record"
                    } else {
                        "bytes that are not a TLS record"
                    };
                    if from == Role::Server && h[0] & 0x80 != 0 {
                        self.server_sslv2 = true;
                    }
                    let dir = match from {
                        Role::Client => &mut self.client,
                        Role::Server => &mut self.server,
                    };
                    dir.off = true;
                    if self.not_tls.is_none() {
                        self.not_tls = Some(format!(
                            "{} sent {why}; TLS analysis stopped on this connection",
                            from.as_str()
                        ));
                    }
                    return;
                }
                dir.kind = h[0];
                dir.left = len;
                dir.record.clear();
                // TLS 1.3 has no ChangeCipherSpec: one is a middlebox-compatibility dummy (RFC
                // 8446 D.4), sent after a HelloRetryRequest too, and what follows it is still
                // cleartext until the real ServerHello.
                let tls13 = self
                    .server_hello
                    .as_ref()
                    .is_some_and(|(s, _)| s.version == 0x0304);
                if dir.kind == 20 && tls13 {
                    dir.kind = 0;
                    continue;
                }
                if from == Role::Client && dir.kind == 22 && dir.encrypted {
                    self.client_encrypted_finished = true;
                }
                if dir.kind == 20 || (dir.kind == 23) || (dir.kind == 22 && dir.encrypted) {
                    match (from, dir.kind) {
                        (Role::Client, _) => {
                            self.client_encrypted.get_or_insert(at);
                        }
                        (Role::Server, _) => {
                            self.server_encrypted.get_or_insert(at);
                        }
                    }
                    let dir = match from {
                        Role::Client => &mut self.client,
                        Role::Server => &mut self.server,
                    };
                    if dir.kind == 20 {
                        dir.encrypted = true;
                        self.last_step = format!("ChangeCipherSpec ({})", from.as_str());
                    }
                    if dir.kind == 23 {
                        match from {
                            Role::Client => {
                                self.client_app_data = true;
                                self.client_app_records = self.client_app_records.saturating_add(1);
                            }
                            Role::Server => {
                                self.server_app_data = true;
                                self.server_app_records = self.server_app_records.saturating_add(1);
                            }
                        }
                    }
                }
                continue;
            }
            let take = dir.left.min(data.len());
            let keep =
                dir.kind == 21 || dir.kind == SSLV2_HELLO || (dir.kind == 22 && !dir.encrypted);
            if keep {
                dir.record.extend_from_slice(&data[..take]);
            }
            dir.left -= take;
            data = &data[take..];
            if dir.left > 0 {
                return;
            }
            let record = std::mem::take(&mut dir.record);
            match dir.kind {
                21 => self.on_alert(from, &record, at),
                22 if keep => self.on_handshake_bytes(from, &record, at),
                SSLV2_HELLO => self.on_sslv2_hello(&record, at),
                _ => {}
            }
        }
    }

    fn on_alert(&mut self, from: Role, record: &[u8], at: Seen) {
        let encrypted = match from {
            Role::Client => self.client.encrypted,
            Role::Server => self.server.encrypted,
        };
        // A TLS 1.3 server's alerts after its ServerHello are encrypted and unreadable.
        if encrypted || record.len() != 2 || self.alerts.len() >= 8 {
            return;
        }
        self.alerts.push(Alert {
            from,
            at,
            fatal: record[0] == 2,
            description: record[1],
            after: self.last_step.clone(),
        });
    }

    fn on_handshake_bytes(&mut self, from: Role, bytes: &[u8], at: Seen) {
        {
            let dir = match from {
                Role::Client => &mut self.client,
                Role::Server => &mut self.server,
            };
            if dir.handshake.is_empty() {
                dir.handshake_at = Some(at);
            }
            if dir.handshake.len() + bytes.len() > MAX_HANDSHAKE_BUFFER {
                dir.handshake = Vec::new();
                dir.off = true;
                return;
            }
            dir.handshake.extend_from_slice(bytes);
        }
        loop {
            let dir = match from {
                Role::Client => &mut self.client,
                Role::Server => &mut self.server,
            };
            if dir.handshake.len() < 4 {
                return;
            }
            let kind = dir.handshake[0];
            let len = ((dir.handshake[1] as usize) << 16)
                | ((dir.handshake[2] as usize) << 8)
                | dir.handshake[3] as usize;
            if dir.handshake.len() < 4 + len {
                return;
            }
            let msg: Vec<u8> = dir.handshake.drain(..4 + len).collect();
            if dir.handshake.is_empty() && dir.handshake.capacity() > KEEP_HANDSHAKE_CAPACITY {
                dir.handshake = Vec::new();
            }
            self.on_message(from, kind, &msg[4..], at);
        }
    }

    /// An SSLv2-format ClientHello: message type, version, and the cipher, session and
    /// challenge lengths and bytes (no extensions, so no SNI).
    fn on_sslv2_hello(&mut self, msg: &[u8], at: Seen) {
        // Bytes that only start like an SSLv2 hello (a binary protocol) are not followed.
        let Some(h) = handshake::sslv2_client_hello(msg) else {
            self.client.off = true;
            self.not_tls.get_or_insert_with(|| {
                "client sent an SSLv2-style record; TLS analysis stopped on this connection"
                    .to_string()
            });
            return;
        };
        self.sslv2_client_hello = true;
        self.last_step = "ClientHello (client)".to_string();
        self.client_hello.get_or_insert((h, at));
    }

    fn on_message(&mut self, from: Role, kind: u8, body: &[u8], at: Seen) {
        self.last_step = format!("{} ({})", handshake::message_name(kind), from.as_str());
        match (from, kind) {
            (Role::Client, 1) => {
                if let Some(h) = handshake::client_hello(body)
                    && self.client_hello.is_none()
                {
                    self.client_hello = Some((h, at));
                }
            }
            (Role::Server, 2) => {
                if let Some(h) = handshake::server_hello(body) {
                    let tls13 = h.version == 0x0304 && !h.retry_request;
                    if !h.retry_request || self.server_hello.is_none() {
                        self.server_hello = Some((h, at));
                    }
                    if tls13 {
                        // Everything after a TLS 1.3 ServerHello is encrypted.
                        self.server.encrypted = true;
                    }
                }
            }
            (Role::Server, 11) if self.certificates.is_empty() => {
                self.certificates = handshake::certificates(body, MAX_CERTIFICATES);
                self.certificate_at = Some(at);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::Timestamp;

    fn at(frame: u64) -> Seen {
        Seen {
            frame,
            ts: Timestamp(frame as i64 * 1_000_000),
        }
    }

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend((body.len() as u16).to_be_bytes());
        r.extend(body);
        r
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend(body);
        m
    }

    fn client_hello() -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([7u8; 32]);
        b.push(0);
        b.extend([0, 2, 0x13, 0x01, 1, 0]);
        let exts = [0u8, 43, 0, 5, 4, 3, 4, 3, 3];
        b.extend((exts.len() as u16).to_be_bytes());
        b.extend(exts);
        record(22, &message(1, &b))
    }

    /// A ServerHello (TLS 1.3 through supported_versions when `v13`), or a HelloRetryRequest.
    fn server_hello(v13: bool, retry: bool) -> Vec<u8> {
        let mut b = vec![3, 3];
        if retry {
            b.extend(handshake_random_hrr());
        } else {
            b.extend([9u8; 32]);
        }
        b.push(0);
        b.extend([0x13, 0x01, 0]);
        let exts: &[u8] = if v13 { &[0, 43, 0, 2, 3, 4] } else { &[] };
        b.extend((exts.len() as u16).to_be_bytes());
        b.extend(exts);
        message(2, &b)
    }

    fn handshake_random_hrr() -> [u8; 32] {
        [
            0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65,
            0xb8, 0x91, 0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2,
            0xc8, 0xa8, 0x33, 0x9c,
        ]
    }

    /// A Certificate message carrying the given DER blobs.
    fn certificate(ders: &[Vec<u8>]) -> Vec<u8> {
        let mut list: Vec<u8> = Vec::new();
        for d in ders {
            list.extend(&(d.len() as u32).to_be_bytes()[1..]);
            list.extend(d);
        }
        let mut body = (list.len() as u32).to_be_bytes()[1..].to_vec();
        body.extend(list);
        message(11, &body)
    }

    /// Handshake messages split into records of at most `size` bytes.
    fn records(kind: u8, bytes: &[u8], size: usize) -> Vec<u8> {
        bytes.chunks(size).flat_map(|c| record(kind, c)).collect()
    }

    #[test]
    fn regression_tls13_ccs_after_hello_retry_request_hides_no_server_hello() {
        let mut t = TlsConn::default();
        t.on_data(Role::Client, &client_hello(), at(4));
        let mut flight = record(22, &server_hello(true, true));
        flight.extend(record(20, &[1]));
        t.on_data(Role::Server, &flight, at(6));
        let mut again = record(20, &[1]);
        again.extend(client_hello());
        t.on_data(Role::Client, &again, at(8));
        let mut flight = record(22, &server_hello(true, false));
        flight.extend(record(23, &[0; 40]));
        t.on_data(Role::Server, &flight, at(9));
        let (sh, sh_at) = t.server_hello.as_ref().unwrap();
        assert!(!sh.retry_request);
        assert_eq!(sh.version, 0x0304);
        assert_eq!(sh_at.frame, 9);
        assert_eq!(t.server_encrypted.map(|s| s.frame), Some(9));
        t.on_data(Role::Client, &record(23, &[0; 30]), at(10));
        assert!(t.established());
    }

    #[test]
    fn test_tls12_change_cipher_spec_still_encrypts() {
        let mut t = TlsConn::default();
        t.on_data(Role::Client, &client_hello(), at(4));
        t.on_data(
            Role::Server,
            &record(22, &server_hello(false, false)),
            at(6),
        );
        let mut ccs = record(20, &[1]);
        ccs.extend(record(22, &[0; 40]));
        t.on_data(Role::Server, &ccs, at(8));
        assert!(t.server.encrypted);
        assert_eq!(t.server_encrypted.map(|s| s.frame), Some(8));
    }

    fn sslv2_hello() -> Vec<u8> {
        let specs = [0u8, 0x00, 0x2f, 0x00, 0x00, 0x35];
        let challenge = [5u8; 16];
        let mut body = vec![1, 3, 3];
        body.extend((specs.len() as u16).to_be_bytes());
        body.extend(0u16.to_be_bytes());
        body.extend((challenge.len() as u16).to_be_bytes());
        body.extend(specs);
        body.extend(challenge);
        let mut r = (0x8000u16 | body.len() as u16).to_be_bytes().to_vec();
        r.extend(body);
        r
    }

    #[test]
    fn regression_sslv2_client_hello_keeps_server_flight() {
        let mut t = TlsConn::default();
        let hello = sslv2_hello();
        assert!(TlsConn::looks_like_tls(&hello));
        // Split inside the 2-byte header and the body, as TCP may.
        t.on_data(Role::Client, &hello[..1], at(4));
        t.on_data(Role::Client, &hello[1..7], at(4));
        t.on_data(Role::Client, &hello[7..], at(4));
        let (ch, ch_at) = t.client_hello.as_ref().expect("SSLv2 hello read");
        assert_eq!(ch.versions, vec![0x0303]);
        assert_eq!(ch.sni, None);
        assert_eq!(ch_at.frame, 4);
        assert!(t.sslv2_client_hello);
        let mut flight = server_hello(false, false);
        flight.extend(certificate(&[vec![0x30, 3, 1, 2, 3]]));
        t.on_data(Role::Server, &record(22, &flight), at(6));
        assert!(t.server_hello.is_some());
        assert_eq!(t.certificates.len(), 1);
        assert_eq!(t.certificate_at.map(|s| s.frame), Some(6));
        assert_eq!(t.not_tls, None);
        // The client goes on in TLS records.
        t.on_data(Role::Client, &record(22, &message(16, &[0; 10])), at(8));
        assert_eq!(t.not_tls, None);
    }

    #[test]
    fn test_sslv2_server_is_not_called_not_tls() {
        let mut t = TlsConn::default();
        t.on_data(Role::Client, &sslv2_hello(), at(4));
        t.on_data(Role::Server, &[0x80, 0x20, 0x04, 0, 1, 0, 2], at(6));
        assert!(t.server_sslv2);
        assert!(!t.server_not_tls());
        assert!(t.not_tls.as_deref().unwrap().contains("SSLv2"));
    }

    #[test]
    fn regression_certificate_fragmented_over_many_records() {
        let mut t = TlsConn::default();
        t.on_data(Role::Client, &client_hello(), at(4));
        // A 340 KB chain: a leaf and two large certificates, in 16 KB records.
        let ders = vec![vec![0x30; 1000], vec![0x31; 200_000], vec![0x32; 139_000]];
        let mut flight = server_hello(false, false);
        flight.extend(certificate(&ders));
        flight.extend(message(14, &[]));
        let bytes = records(22, &flight, 16_384);
        assert!(bytes.len() > 340_000);
        let mut max_buffered = 0;
        for (i, chunk) in bytes.chunks(1448).enumerate() {
            t.on_data(Role::Server, chunk, at(6 + i as u64));
            max_buffered = max_buffered.max(t.buffered_bytes());
        }
        assert_eq!(t.certificates.len(), 3);
        assert_eq!(t.certificates[1].len(), 200_000);
        assert!(t.certificate_at.unwrap().frame > 200);
        assert!(!t.server.off);
        assert_eq!(t.last_step, "ServerHelloDone (server)");
        assert!(max_buffered <= 2 * MAX_HANDSHAKE_BUFFER + 4 * MAX_RECORD);
        // The chain itself is kept; the message buffer is given back.
        let chain: usize = t.certificates.iter().map(Vec::capacity).sum();
        assert!(t.buffered_bytes() <= chain + 2 * KEEP_HANDSHAKE_CAPACITY + 4 * MAX_RECORD);
    }

    #[test]
    fn regression_completed_handshake_is_not_failed_when_a_direction_was_lost() {
        // TLS 1.2: the server's flight is cut by a capture gap; the client finishes and sends
        // application data, so the server's Finished reached it.
        let mut t = TlsConn::default();
        t.on_data(Role::Client, &client_hello(), at(4));
        t.on_data(
            Role::Server,
            &record(22, &server_hello(false, false)),
            at(6),
        );
        t.on_gap(Role::Server);
        let mut fin = record(22, &message(16, &[0; 33]));
        fin.extend(record(20, &[1]));
        fin.extend(record(22, &[0; 40]));
        t.on_data(Role::Client, &fin, at(8));
        assert!(!t.established());
        assert!(!t.handshake_completed(), "no application data yet");
        t.on_data(Role::Client, &record(23, &[0; 100]), at(10));
        assert!(t.handshake_completed());

        // TLS 1.3: the client's Finished alone is not enough; its next record is.
        let mut t = TlsConn::default();
        t.on_data(Role::Client, &client_hello(), at(4));
        t.on_data(Role::Server, &record(22, &server_hello(true, false)), at(6));
        t.on_gap(Role::Server);
        let mut fin = record(20, &[1]);
        fin.extend(record(23, &[0; 50]));
        t.on_data(Role::Client, &fin, at(8));
        assert!(!t.handshake_completed());
        t.on_data(Role::Client, &record(23, &[0; 100]), at(9));
        assert!(t.handshake_completed());
    }

    #[test]
    fn test_handshake_message_beyond_the_bound_stops_the_direction() {
        let mut t = TlsConn::default();
        t.on_data(Role::Client, &client_hello(), at(4));
        let huge = certificate(&[vec![0x30; MAX_HANDSHAKE_BUFFER + 10]]);
        for chunk in records(22, &huge, 16_384).chunks(16_389) {
            t.on_data(Role::Server, chunk, at(6));
        }
        assert!(t.server.off);
        assert!(t.certificates.is_empty());
        assert!(t.buffered_bytes() <= MAX_HANDSHAKE_BUFFER + 4 * MAX_RECORD);
    }
}
