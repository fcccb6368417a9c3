//! Connections: the TCP state each 4-tuple goes through, and its two byte streams.

mod connection;
mod frame_list;
mod reassembly;
mod table;
mod transport;

pub use crate::decode::SeqNumber;
pub use connection::{
    ConnRef, Connection, IDLE_AFTER, Reset, Role, RoleSource, Seen, Side, TcpPhase, Unreachable,
};
pub use frame_list::FrameList;
pub use reassembly::{Budget, Reassembler, StreamEvent};
pub use table::{Finalize, FlowLimits, FlowObserver, FlowStats, FlowTable, flow_hash};
pub use transport::TcpStats;
