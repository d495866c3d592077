//! Types shared by the controller, the agent and the clients: the HTTP API's request and view
//! structs, the agent protocol, name validation and time rendering. Nothing here does I/O.

pub mod agent;
pub mod api;
pub mod artifact;
#[cfg(feature = "x509")]
pub mod certificate;
pub mod events;
pub mod hex;
pub mod marketplace;
pub mod names;
pub mod network;
pub mod observed;
pub mod subjects;
pub mod time;
pub mod usage;
pub mod volumes;

/// The API version prefix every route lives under.
pub const API_PREFIX: &str = "/api/v1";

/// The controller's default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8440";
