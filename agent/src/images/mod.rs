//! Base images and per-instance overlays.

pub mod base;
pub mod qcow2;
