use serde::Serialize;
use std::fmt;

/// Every finding kind of the catalogue (`findings.md`). The snake_case strings are a contract:
/// users filter on them in CI, so a kind is added but never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    HandshakeRefused,
    SynUnanswered,
    SynRetransmitted,
    ConnectionReset,
    ClosedBeforeResponse,
    ClientClosedEarly,
    OversizePacket,
    MtuBlackhole,
    IcmpFragNeeded,
    PacketLoss,
    HighRtt,
    ZeroWindow,
    KeepaliveRace,
    ServerRestart,
    CaptureGap,
    MalformedResponse,
    MalformedRequest,
    ResponseBodyTruncated,
    ResponseBodyOverrun,
    ConflictingContentLength,
    ContentLengthWithChunked,
    MalformedChunked,
    RequestBodyTruncated,
    RequestIncomplete,
    HeaderTooLarge,
    UriTooLong,
    TraceMethod,
    HttpOnTlsPort,
    AlbTraceLoop,
    AlbQpsLimited,
    ErrorStatus,
    SlowResponse,
    NoResponse,
    TlsCertExpired,
    TlsSniMismatch,
    TlsHandshakeFailure,
    TlsNoSni,
    TlsCertUnverifiable,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::HandshakeRefused => "handshake_refused",
            Kind::SynUnanswered => "syn_unanswered",
            Kind::SynRetransmitted => "syn_retransmitted",
            Kind::ConnectionReset => "connection_reset",
            Kind::ClosedBeforeResponse => "closed_before_response",
            Kind::ClientClosedEarly => "client_closed_early",
            Kind::OversizePacket => "oversize_packet",
            Kind::MtuBlackhole => "mtu_blackhole",
            Kind::IcmpFragNeeded => "icmp_frag_needed",
            Kind::PacketLoss => "packet_loss",
            Kind::HighRtt => "high_rtt",
            Kind::ZeroWindow => "zero_window",
            Kind::KeepaliveRace => "keepalive_race",
            Kind::ServerRestart => "server_restart",
            Kind::CaptureGap => "capture_gap",
            Kind::MalformedResponse => "malformed_response",
            Kind::MalformedRequest => "malformed_request",
            Kind::ResponseBodyTruncated => "response_body_truncated",
            Kind::ResponseBodyOverrun => "response_body_overrun",
            Kind::ConflictingContentLength => "conflicting_content_length",
            Kind::ContentLengthWithChunked => "content_length_with_chunked",
            Kind::MalformedChunked => "malformed_chunked",
            Kind::RequestBodyTruncated => "request_body_truncated",
            Kind::RequestIncomplete => "request_incomplete",
            Kind::HeaderTooLarge => "header_too_large",
            Kind::UriTooLong => "uri_too_long",
            Kind::TraceMethod => "trace_method",
            Kind::HttpOnTlsPort => "http_on_tls_port",
            Kind::AlbTraceLoop => "alb_trace_loop",
            Kind::AlbQpsLimited => "alb_qps_limited",
            Kind::ErrorStatus => "error_status",
            Kind::SlowResponse => "slow_response",
            Kind::NoResponse => "no_response",
            Kind::TlsCertExpired => "tls_cert_expired",
            Kind::TlsSniMismatch => "tls_sni_mismatch",
            Kind::TlsHandshakeFailure => "tls_handshake_failure",
            Kind::TlsNoSni => "tls_no_sni",
            Kind::TlsCertUnverifiable => "tls_cert_unverifiable",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_serde_name_matches_as_str() {
        for k in [
            Kind::HandshakeRefused,
            Kind::TlsCertUnverifiable,
            Kind::AlbQpsLimited,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
