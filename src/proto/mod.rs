//! Protocol analyzers over reassembled byte streams (HTTP/1.x and TLS, found by content). They
//! frame messages and say what each was and what was wrong with its bytes; `detect/` judges.

pub mod http;
pub mod tls;

use crate::flow::{Role, Seen};

/// The protocol a connection carries, decided by its first bytes.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum App {
    Http(Box<http::HttpConn>),
    Tls(Box<tls::TlsConn>),
}

impl App {
    /// Starts analyzing a connection whose first payload is `bytes` from `from`.
    pub fn new(from: Role, bytes: &[u8], start_captured: bool, limits: http::HttpLimits) -> App {
        if from == Role::Client && tls::TlsConn::looks_like_tls(bytes) {
            App::Tls(Box::default())
        } else {
            App::Http(Box::new(http::HttpConn::new(start_captured, limits)))
        }
    }

    /// Feeds stream bytes; HTTP hands each transaction to `sink` as it completes.
    pub fn on_data(
        &mut self,
        from: Role,
        offset: u64,
        bytes: &[u8],
        at: Seen,
        sink: &mut dyn FnMut(http::HttpEvent<'_>),
    ) {
        // Server bytes held by the HTTP analyzer before a TLS ClientHello: it was TLS after all.
        if let App::Http(h) = self
            && from == Role::Client
            && !h.is_http()
            && h.transactions == 0
            && offset == 0
            && tls::TlsConn::looks_like_tls(bytes)
        {
            *self = App::Tls(Box::default());
        }
        match self {
            App::Http(h) => h.on_data(from, offset, bytes, at, sink),
            App::Tls(t) => t.on_data(from, bytes, at),
        }
    }

    pub fn on_gap(
        &mut self,
        from: Role,
        len: u64,
        at: Seen,
        sink: &mut dyn FnMut(http::HttpEvent<'_>),
    ) {
        match self {
            App::Http(h) => h.on_gap(from, len, at, sink),
            // A gap in TLS leaves the record layer lost; what was learnt before it stands.
            App::Tls(t) => t.on_gap(from),
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        match self {
            App::Http(h) => h.buffered_bytes(),
            App::Tls(t) => t.buffered_bytes(),
        }
    }

    pub fn shed_buffers(&mut self) {
        match self {
            App::Http(h) => h.shed_buffers(),
            App::Tls(t) => t.shed_buffers(),
        }
    }

    pub fn http(&self) -> Option<&http::HttpConn> {
        match self {
            App::Http(h) => Some(h),
            App::Tls(_) => None,
        }
    }

    pub fn http_mut(&mut self) -> Option<&mut http::HttpConn> {
        match self {
            App::Http(h) => Some(h),
            App::Tls(_) => None,
        }
    }

    pub fn tls(&self) -> Option<&tls::TlsConn> {
        match self {
            App::Tls(t) => Some(t),
            App::Http(_) => None,
        }
    }
}
