//! `--format json`: the report as one JSON object; the schema is documented in docs/json-report.md.

use crate::report::Report;
use std::io::{self, Write};

pub fn render(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report).map_err(io::Error::other)?;
    writeln!(w)
}
