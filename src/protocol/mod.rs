//! The stdio protocol between the driver and `serve` (docs/protocol.md): message types and
//! framing. Knows nothing of processes or files.

pub mod framing;
pub mod messages;
pub mod pipes;

pub use messages::{
    AgentMessage, ErrorCode, HelloResult, Op, PROTOCOL_VERSION, Request, WireReport, WireSettings,
};
