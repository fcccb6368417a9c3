//! `--format json`: the report as one JSON object; the schema is documented in docs/json-report.md.

use crate::report::Report;
use std::io::{self, Write};

pub fn render(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report).map_err(|e| match e.io_error_kind() {
        // Keep the kind so the caller can recognise a closed pipe.
        Some(kind) => io::Error::from(kind),
        None => io::Error::other(e),
    })?;
    writeln!(w)
}
