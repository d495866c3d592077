//! The StratusLab host agent: owns everything on its hypervisor host. It registers the host,
//! follows the controller's desired state and reconciles it with what libvirt runs.

pub mod hypervisor;
pub mod images;
