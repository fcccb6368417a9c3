//! TLS findings: failed handshakes, expired or not-yet-valid certificates and certificates
//! that do not cover the SNI, judged at the capture's own time. The same certificate problem on
//! many connections is one finding with a count and example frames.

use super::{Context, Draft, Findings, Subject, actor, cause};
use crate::capture::Timestamp;
use crate::flow::{Connection, Role, Seen};
use crate::proto::tls::handshake::{alert_name, version_name};
use crate::proto::tls::{TlsConn, cert};
use crate::report::{Finding, Kind, Severity};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// Groups of certificate problems and once-per-server notes; bounded like everything else.
const MAX_GROUPS: usize = 10_000;
const EXAMPLES: usize = 5;

struct Group {
    finding: Finding,
    count: u64,
}

#[derive(Default)]
pub struct TlsFindings {
    groups: BTreeMap<(Kind, SocketAddr, String), Group>,
    noted: BTreeSet<(Kind, SocketAddr)>,
}

fn rfc3339(secs: i64) -> String {
    Timestamp(secs.saturating_mul(Timestamp::NANOS_PER_SEC)).rfc3339()
}

fn cert_evidence(
    info: &cert::CertInfo,
    chain: &[Vec<u8>],
    sni: Option<&str>,
    at: Option<Seen>,
) -> Value {
    let chain: Vec<Value> = chain
        .iter()
        .filter_map(|der| cert::parse(der))
        .map(|c| json!({"subject": c.subject, "issuer": c.issuer, "self_signed": c.self_signed}))
        .collect();
    json!({
        "sni": sni,
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "san_dns": info.dns_names,
        "san_ip": info.ip_addresses.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "not_before": rfc3339(info.not_before),
        "not_after": rfc3339(info.not_after),
        "sha256": info.sha256,
        "x509_version": info.version,
        "self_signed": info.self_signed,
        "certificate_frame": at.map(|s| s.frame),
        "chain": chain,
    })
}

impl TlsFindings {
    fn group(
        &mut self,
        key: (Kind, SocketAddr, String),
        conn: &Connection,
        frames: &[u64],
        make: impl FnOnce() -> Finding,
        out: &mut Findings,
    ) {
        if let Some(g) = self.groups.get_mut(&key) {
            g.count += 1;
            if g.finding.packets.len() < EXAMPLES * 3 {
                g.finding.packets.extend_from_slice(frames);
            }
            return;
        }
        if self.groups.len() >= MAX_GROUPS || !out.accepts(key.0, conn.server) {
            return;
        }
        self.groups.insert(
            key,
            Group {
                finding: make(),
                count: 1,
            },
        );
    }

    fn note_once(
        &mut self,
        kind: Kind,
        conn: &Connection,
        out: &mut Findings,
        make: impl FnOnce() -> Finding,
    ) {
        if self.noted.len() < MAX_GROUPS && self.noted.insert((kind, conn.server)) {
            out.push(make());
        }
    }

    pub fn on_connection(
        &mut self,
        conn: &Connection,
        tls: &TlsConn,
        ctx: &Context<'_>,
        out: &mut Findings,
    ) {
        let Some((hello, hello_at)) = &tls.client_hello else {
            return;
        };
        let sni = hello.sni.as_deref();
        let offered: Vec<String> = hello.versions.iter().map(|v| version_name(*v)).collect();
        let chosen = tls
            .server_hello
            .as_ref()
            .map(|(s, _)| version_name(s.version));

        self.handshake_failure(
            conn,
            tls,
            *hello_at,
            sni,
            &offered,
            chosen.as_deref(),
            ctx,
            out,
        );

        if sni.is_none() {
            self.note_once(Kind::TlsNoSni, conn, out, || {
                Draft {
                    kind: Kind::TlsNoSni,
                    severity: Severity::Info,
                    packets: vec![hello_at.frame],
                    first_ts: hello_at.ts,
                    summary: format!("Clients reach {} without SNI: the server answers with its default certificate.", conn.server),
                    evidence: json!({"client_hello_frame": hello_at.frame, "offered_versions": offered}),
                    causes: vec![cause(400, None, "Without SNI a server hosting several names cannot pick the right certificate; clients that check names then fail.".into(), &["Make the client (or the balancer's backend HTTPS settings) send SNI.".into()])],
                }
                .finish(conn, ctx)
            });
        }

        let tls13 = tls
            .server_hello
            .as_ref()
            .is_some_and(|(s, _)| s.version == 0x0304);
        let leaf = tls
            .certificates
            .first()
            .and_then(|der| cert::parse(der).map(|i| (der, i)));
        let Some((der, info)) = leaf else {
            if let Some((_, sh_at)) = &tls.server_hello {
                let why = if tls13 {
                    "TLS 1.3 encrypts the server's certificate, so its validity and names cannot be checked from a capture"
                } else if tls.certificates.is_empty() {
                    "the server's certificate is not in the capture (a resumed session, or it was not captured)"
                } else {
                    "the server's certificate could not be parsed"
                };
                self.note_once(Kind::TlsCertUnverifiable, conn, out, || {
                    Draft {
                        kind: Kind::TlsCertUnverifiable,
                        severity: Severity::Info,
                        packets: vec![sh_at.frame],
                        first_ts: sh_at.ts,
                        summary: format!("{}: for {} it is not known whether the certificate is valid or covers {}.", capitalize(why), conn.server, sni.unwrap_or("the requested name")),
                        evidence: json!({"reason": why, "version": chosen, "sni": sni}),
                        causes: vec![],
                    }
                    .finish(conn, ctx)
                });
            }
            return;
        };
        let cert_at = tls.certificate_at.unwrap_or(*hello_at);
        let now = cert_at.ts.0 / Timestamp::NANOS_PER_SEC;
        let mut evidence = cert_evidence(&info, &tls.certificates, sni, tls.certificate_at);
        evidence["version"] = chosen.clone().into();
        let host = conn.server;
        if now > info.not_after || now < info.not_before {
            let expired = now > info.not_after;
            let mut ev = evidence.clone();
            ev["capture_time"] = cert_at.ts.rfc3339().into();
            self.group((Kind::TlsCertExpired, host, info.sha256.clone()), conn, &[cert_at.frame], || {
                Draft {
                    kind: Kind::TlsCertExpired,
                    severity: Severity::Error,
                    packets: vec![cert_at.frame],
                    first_ts: cert_at.ts,
                    summary: if expired {
                        format!("{host}'s certificate for {} expired on {}, before this capture ({}).", info.common_name.as_deref().unwrap_or(&info.subject), rfc3339(info.not_after), cert_at.ts.rfc3339())
                    } else {
                        format!("{host}'s certificate for {} is not valid until {}, after this capture ({}).", info.common_name.as_deref().unwrap_or(&info.subject), rfc3339(info.not_before), cert_at.ts.rfc3339())
                    },
                    evidence: ev,
                    causes: vec![cause(502, Some("-"), "A client that checks certificates aborts the handshake. On a backend HTTPS leg the balancer cannot connect and answers 502; on a listener, clients fail before sending any request.".into(), &[
                        format!("Check the certificate's dates: openssl s_client -connect {host} -servername {} </dev/null | openssl x509 -noout -dates", sni.unwrap_or("<name>")),
                        "Renew and redeploy the certificate; check the server's clock too (a certificate 'not yet valid' often means a wrong clock).".into(),
                    ])],
                }
                .finish(conn, ctx)
            }, out);
        }
        if let Some(name) = sni
            && !cert::covers(der, &info, name)
        {
            self.group((Kind::TlsSniMismatch, host, format!("{}|{name}", info.sha256)), conn, &[cert_at.frame], || {
                let names = if info.dns_names.is_empty() && info.ip_addresses.is_empty() {
                    format!("CN {}", info.common_name.as_deref().unwrap_or("(none)"))
                } else {
                    info.dns_names.iter().cloned().chain(info.ip_addresses.iter().map(|i| i.to_string())).collect::<Vec<_>>().join(", ")
                };
                Draft {
                    kind: Kind::TlsSniMismatch,
                    severity: Severity::Error,
                    packets: vec![hello_at.frame, cert_at.frame],
                    first_ts: hello_at.ts,
                    summary: format!("The client asked {host} for {name}, but the certificate it got covers only {names}."),
                    evidence: evidence.clone(),
                    causes: vec![cause(502, Some("-"), "A client that checks names aborts the handshake (or shows a certificate error). On a backend HTTPS leg the balancer fails to connect: 502.".into(), &[
                        format!("See what the server presents for that name: openssl s_client -connect {host} -servername {name} </dev/null | openssl x509 -noout -subject -ext subjectAltName"),
                        "Add the name to the certificate's subjectAltName, or bind the right certificate to this name.".into(),
                    ])],
                }
                .finish_for(&Subject::of(conn), ctx)
                .with(|f| f.sni = sni.map(str::to_string))
                .finding
            }, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handshake_failure(
        &mut self,
        conn: &Connection,
        tls: &TlsConn,
        hello_at: Seen,
        sni: Option<&str>,
        offered: &[String],
        chosen: Option<&str>,
        ctx: &Context<'_>,
        out: &mut Findings,
    ) {
        // One direction missing from the capture: the other side's half of the handshake was
        // never seen, so its absence is no failure.
        // An SSLv2 server's handshake is not followed: nothing can be said of how it ended.
        if tls.handshake_completed()
            || tls.server_sslv2
            || conn.one_sided()
            || !out.accepts(Kind::TlsHandshakeFailure, conn.server)
        {
            return;
        }
        let alert = tls.alerts.iter().find(|a| a.fatal || a.description != 0);
        let closed = [
            conn.to_server.fin.map(|s| (s, Role::Client, "FIN")),
            conn.to_client.fin.map(|s| (s, Role::Server, "FIN")),
            conn.reset.map(|r| (r.at, r.by, "RST")),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(s, _, _)| s.frame);
        if tls.server_not_tls() {
            let at = closed.map_or(hello_at, |(s, _, _)| s);
            out.push(
                Draft {
                    kind: Kind::TlsHandshakeFailure,
                    severity: Severity::Error,
                    packets: vec![hello_at.frame, at.frame],
                    first_ts: hello_at.ts,
                    summary: format!("The client started TLS with {}, which answered with something that is not TLS (a plain HTTP server on this port?).", conn.server),
                    evidence: json!({"by": "server", "alert": null, "after": "ClientHello (client)", "sni": sni, "offered_versions": offered}),
                    causes: vec![cause(502, Some("-"), "The backend does not speak TLS on this port: an HTTPS backend configured against an HTTP port makes the balancer fail with 502.".into(), &[format!("Check which protocol {} expects: curl -v http://{}/ and curl -vk https://{}/", conn.server, conn.server, conn.server), "Set the backend protocol in the server group to match the service.".into()])],
                }
                .finish_for(&Subject::of(conn), ctx)
                .with(|f| {
                    f.by = Some(crate::report::Actor::Server);
                    f.sni = sni.map(str::to_string);
                }),
            );
            return;
        }
        let (at, by, what) = match (alert, closed) {
            (Some(a), _) => (
                a.at,
                a.from,
                format!(
                    "a fatal {} alert after {}",
                    alert_name(a.description),
                    if a.after.is_empty() {
                        "the ClientHello"
                    } else {
                        &a.after
                    }
                ),
            ),
            (None, Some((s, by, how))) => (
                s,
                by,
                format!(
                    "a {how} during the handshake, after {}",
                    if tls.last_step.is_empty() {
                        "the ClientHello".to_string()
                    } else {
                        tls.last_step.clone()
                    }
                ),
            ),
            (None, None) => return,
        };
        let who = match by {
            Role::Client => format!("the client {}", conn.client),
            Role::Server => format!("the server {}", conn.server),
        };
        let hint = match alert.map(|a| a.description) {
            Some(70) => {
                "The two sides share no TLS version: compare the versions the client offers with those the server allows."
            }
            Some(40) => {
                "No common cipher suite or parameters, or the server requires a client certificate that was not sent."
            }
            Some(42..=46) | Some(48) => {
                "The side that sent the alert rejected the other's certificate (untrusted issuer, expired, wrong name)."
            }
            Some(112) => "The server has no certificate for the name in the SNI.",
            _ => "Look at the last step before the failure and at the server's TLS logs.",
        };
        let mut packets = vec![hello_at.frame, at.frame];
        packets.extend(tls.server_hello.as_ref().map(|(_, s)| s.frame));
        out.push(
            Draft {
                kind: Kind::TlsHandshakeFailure,
                severity: Severity::Error,
                packets,
                first_ts: hello_at.ts,
                summary: format!("The TLS handshake with {} failed: {who} ended it with {what}.", conn.server),
                evidence: json!({
                    "by": by.as_str(),
                    "alert": alert.map(|a| alert_name(a.description)),
                    "alert_frame": alert.map(|a| a.at.frame),
                    "after": if tls.last_step.is_empty() { "ClientHello (client)".to_string() } else { alert.map_or(tls.last_step.clone(), |a| a.after.clone()) },
                    "sni": sni,
                    "offered_versions": offered,
                    "chosen_version": chosen,
                }),
                causes: vec![cause(502, Some("-"), format!("On a backend HTTPS leg the balancer cannot complete TLS with the backend and answers 502; on a listener the client fails before any request. {hint}"), &[
                    format!("Reproduce the handshake: openssl s_client -connect {} -servername {} -state </dev/null", conn.server, sni.unwrap_or("<name>")),
                ])],
            }
            .finish_for(&Subject::of(conn), ctx)
            .with(|f| {
                f.by = Some(actor(by));
                f.alert = alert.map(|a| alert_name(a.description).to_string());
                f.sni = sni.map(str::to_string);
            }),
        );
    }

    pub fn finish(self, out: &mut Findings) {
        for mut g in self.groups.into_values() {
            if g.count > 1 {
                g.finding
                    .evidence
                    .insert("connections".into(), g.count.into());
                g.finding
                    .summary
                    .push_str(&format!(" Seen on {} connections.", g.count));
            }
            g.finding.packets.sort_unstable();
            g.finding.packets.dedup();
            out.push(g.finding);
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}
