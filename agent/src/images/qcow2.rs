//! qcow2 headers: in-process overlays and inspection.
