//! What hosts observe of their guests and push to the controller outside the replicated
//! state: the serial console's output, recent CPU use, and the host's own use over time
//! ([`crate::usage`]). `POST /api/v1/hosts/{name}/observed`
//! (the host's own certificate) carries a [`HostObserved`]; the answer ([`ObservedAnswer`]) asks for console
//! bytes the controller lacks (after a controller restart or a leader change).

use serde::{Deserialize, Serialize};

use crate::usage::{HostHistory, HostSample};

/// The most console output a controller keeps per instance, and the most one chunk carries.
pub const CONSOLE_KEEP_BYTES: u64 = 256 * 1024;

/// `POST /api/v1/hosts/{name}/observed`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostObserved {
    /// New console output (or, with empty `data`, where each console stands).
    #[serde(default)]
    pub consoles: Vec<ConsoleChunk>,
    /// CPU use of the running guests.
    #[serde(default)]
    pub usage: Vec<GuestUsage>,
    /// The host's own use, newly measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostSample>,
    /// The host's whole kept history of its use, when the controller asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HostHistory>,
}

/// Bytes of an instance's console log from `offset` on (its position in the log, which only
/// grows while the instance exists).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleChunk {
    pub instance: u64,
    pub offset: u64,
    /// The bytes, base64 (standard alphabet, padded): a console is not always UTF-8.
    pub data: String,
}

/// An instance's recent CPU use.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestUsage {
    pub instance: u64,
    /// Percent of one host CPU over the last measurement interval (up to 100 per vCPU).
    pub cpu_percent: u32,
}

/// The controller's answer to a push.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObservedAnswer {
    /// Consoles to send again from an earlier offset.
    #[serde(default)]
    pub resend: Vec<ConsoleResend>,
    /// The controller has no history of the host's use: send it whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send_history: bool,
}

/// Send instance `instance`'s console again from `from`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsoleResend {
    pub instance: u64,
    pub from: u64,
}
