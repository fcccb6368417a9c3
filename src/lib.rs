//! lbdiag reads a tcpdump capture and explains why a load balancer answered 400, 405, 408, 414,
//! 463, 499, 500, 502, 503 or 504. A packet's path through the crate:
//! [`capture`] -> [`decode`] -> [`flow`] -> [`detect`] -> [`report`] -> [`render`].
//! [`analyze`] runs that pipeline on files.

pub mod accesslog;
pub mod analyze;
pub mod capture;
pub mod decode;
pub mod detect;
pub mod flow;
pub mod hosts;
pub mod proto;
pub mod render;
pub mod report;
pub mod verdict;

pub use analyze::{Options, analyze_path, analyze_paths};
pub use report::{FailOn, Report, Severity};
