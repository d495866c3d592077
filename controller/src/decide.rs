//! Values decided before a command is proposed, so that `State::apply` never reads a clock or
//! draws a random number: the time, UUIDs, NBD export names, secret tokens.

pub use stratus_common::time::now_ms;

/// A random (version 4) UUID.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A random secret of 256 bits, URL-safe, prefixed with what it is for (`stratus-join`,
/// `stratus-api`): the prefix tells a leaked secret's kind at a glance (and to secret
/// scanners).
pub fn secret(kind: &str) -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{kind}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The lowercase hex SHA-256 of a secret, as the state keeps it.
pub fn secret_digest(secret: &str) -> String {
    use sha2::Digest as _;
    stratus_common::hex::encode(sha2::Sha256::digest(secret.as_bytes()))
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
