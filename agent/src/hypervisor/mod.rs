//! Hypervisor access (libvirt) behind a trait.
