//! The StratusLab host agent: owns everything on its hypervisor host. It registers the host,
//! follows the controller's desired state and reconciles it with what libvirt runs.

pub mod command_line;
pub mod config;
pub mod context;
pub mod controller_client;
pub mod durable;
pub mod failure;
pub mod host_usage;
pub mod hypervisor;
pub mod identity;
pub mod images;
pub mod instance_dir;
pub mod inventory;
pub mod lease;
pub mod metrics;
pub mod network;
pub mod observe;
pub mod outbox;
pub mod reconcile;
pub mod self_fence;
pub mod volumes;
