//! The stdio protocol between the driver and `serve` (docs/protocol.md): message types and
//! framing. Knows nothing of processes or files.

pub mod framing;
pub(crate) mod messages;
pub(crate) mod pipes;

// Public for the integration tests (tests/protocol_fuzz.rs, tests/bring_agent.rs).
pub use messages::{AgentMessage, PROTOCOL_VERSION};
pub(crate) use messages::{
    BLAKE3_DIGEST, ErrorCode, HelloResult, Op, Request, SCRIPT_ENDED, WireCompression, WireReport,
    WireSettings, ZSTD_CODEC,
};
