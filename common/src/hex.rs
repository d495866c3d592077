//! Lowercase hex, the form every digest and fingerprint takes in this project.

/// Encodes `bytes` as lowercase hex.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    use std::fmt::Write as _;
    let bytes = bytes.as_ref();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_lowercase() {
        assert_eq!(super::encode([0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(super::encode([]), "");
    }
}
