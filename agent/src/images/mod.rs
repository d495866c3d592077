//! Base images and per-instance overlays.

pub mod qcow2;
