//! Persistent disks (volumes) on a storage host: the pool of sparse raw files that holds them
//! ([`VolumePool`]) and the NBD exports through which instances on other hosts reach them
//! ([`NbdExports`], one `qemu-storage-daemon` per attachment, outliving agent restarts, over
//! TLS with the host's certificate: [`credentials`]).
//!
//! An instance on the storage host itself uses the pool's file directly; how a disk reaches
//! the guest is the hypervisor's concern (`crate::hypervisor::DomainDisk`).

pub mod credentials;
pub mod nbd;
pub mod pool;

#[cfg(test)]
mod root_tests;
#[cfg(test)]
pub(crate) mod test_pki;

pub use nbd::{is_export_name, NbdEndpoint, NbdError, NbdExports};
pub use pool::{PoolError, VolumePool};
