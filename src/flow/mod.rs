//! Connections: the TCP state each 4-tuple goes through, and its two byte streams.

mod connection;
mod reassembly;
mod seq;
mod table;

pub use connection::{
    ConnRef, Connection, FrameList, IDLE_AFTER, Reset, Role, RoleSource, Seen, Side, TcpPhase,
};
pub use reassembly::{Budget, Reassembler, StreamEvent};
pub use seq::SeqNumber;
pub use table::{FlowLimits, FlowStats, FlowTable};
