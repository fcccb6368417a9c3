//! Protocol analyzers over reassembled byte streams. They record what each message was and
//! what was wrong with it; `detect/` turns that into findings.

pub mod http;
