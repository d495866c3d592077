//! Values decided before a command is proposed, so that `State::apply` never reads a clock or
//! draws a random number: the time, UUIDs, NBD export names.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random (version 4) UUID.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A random NBD export name: 128 bits, so it cannot be guessed.
pub fn export_name() -> String {
    format!("sl-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_differ() {
        let (a, b) = (uuid(), uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(stratus_common::volumes::is_uuid(&a));
    }

    #[test]
    fn export_names_are_long_and_differ() {
        let (a, b) = (export_name(), export_name());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 32);
    }
}
