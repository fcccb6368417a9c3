//! What a server certificate says, for the report, and whether it covers a name. Name checks
//! use rustls-webpki where it can judge; it cannot for v1 certificates (it refuses to parse
//! them) nor for certificates with no subjectAltName (it has no common-name fallback), and for
//! those our own RFC 6125 matcher below decides.

use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    pub serial: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub version: u32,
    pub sha256: String,
    pub self_signed: bool,
}

pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                    16 => ip_addresses.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let digest = Sha256::digest(der);
    Some(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        common_name,
        serial: cert.raw_serial_as_string(),
        dns_names,
        ip_addresses,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        version: cert.version().0 + 1,
        sha256: digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        self_signed: cert.subject() == cert.issuer(),
    })
}

/// Whether the certificate covers the name the client asked for (its SNI).
pub fn covers(der: &[u8], info: &CertInfo, sni: &str) -> bool {
    if let Ok(ip) = sni.parse::<IpAddr>() {
        return info.ip_addresses.contains(&ip);
    }
    let has_san = !info.dns_names.is_empty() || !info.ip_addresses.is_empty();
    if has_san && info.version == 3 {
        let cert = CertificateDer::from(der);
        if let (Ok(ee), Ok(name)) = (
            webpki::EndEntityCert::try_from(&cert),
            ServerName::try_from(sni),
        ) {
            return ee.verify_is_valid_for_subject_name(&name).is_ok();
        }
    }
    // webpki could not judge: a v1/v2 certificate, no SAN (use the CN), or an unusual name.
    if has_san {
        info.dns_names
            .iter()
            .any(|pattern| name_matches(pattern, sni))
    } else {
        info.common_name
            .as_deref()
            .is_some_and(|cn| name_matches(cn, sni))
    }
}

/// RFC 6125 §6.4: case-insensitive; a `*` only as the whole left-most label, matching exactly
/// one label, and never a public suffix alone (`*.com`).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(base) => {
            if !base.contains('.') || base.contains('*') {
                return false;
            }
            match name.split_once('.') {
                Some((first, rest)) => !first.is_empty() && rest == base,
                None => false,
            }
        }
        None => !pattern.contains('*') && pattern == name,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// A v1 certificate (made with `openssl x509 -req -signkey`): rustls-webpki refuses it,
    /// so the CN fallback decides.
    const V1_CN_ONLY: &[u8] = include_bytes!("testdata/v1-cn-only.der");

    #[test]
    fn test_v1_certificate_uses_the_common_name() {
        let info = parse(V1_CN_ONLY).expect("parses");
        assert_eq!(info.version, 1);
        assert!(info.dns_names.is_empty());
        assert!(covers(V1_CN_ONLY, &info, "v1.example.test"));
        assert!(!covers(V1_CN_ONLY, &info, "other.example.test"));
        assert_eq!(info.sha256.len(), 32 * 3 - 1);
    }

    #[test]
    fn test_exact_names_ignore_case_and_trailing_dot() {
        assert!(name_matches("www.Example.com", "WWW.example.com."));
        assert!(!name_matches("www.example.com", "example.com"));
    }

    #[test]
    fn test_wildcard_covers_exactly_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
    }

    #[test]
    fn test_wildcard_must_be_whole_leftmost_label_and_not_public_suffix() {
        assert!(!name_matches("a*.example.com", "ab.example.com"));
        assert!(!name_matches("www.*.com", "www.example.com"));
        assert!(!name_matches("*.com", "example.com"));
        assert!(!name_matches("*.*.example.com", "a.b.example.com"));
    }
}
