//! Connections: the TCP state each 4-tuple goes through, and its two byte streams.

mod connection;
mod reassembly;
mod seq;
mod table;
mod transport;

pub use connection::{
    ConnRef, Connection, FrameList, IDLE_AFTER, Reset, Role, RoleSource, Seen, Side, TcpPhase,
    Unreachable,
};
pub use reassembly::{Budget, Reassembler, StreamEvent};
pub use seq::SeqNumber;
pub use table::{FlowLimits, FlowObserver, FlowStats, FlowTable};
pub use transport::TcpStats;
