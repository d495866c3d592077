//! Checks of what users hand to their guests through the API: an OpenSSH public key and user
//! data. Both are stored in the replicated state and go to the host, so they are bounded, and the
//! key must be exactly one `authorized_keys` line of a known type (no options such as
//! `command=`, no second line smuggled in).

/// Largest SSH public key accepted, in bytes (RSA 16384-bit keys are about 2.8 KiB).
pub const MAX_SSH_KEY_BYTES: usize = 16 * 1024;
/// Largest user data accepted, in bytes.
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;

/// Key types OpenSSH accepts in `authorized_keys`.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestInputError {
    #[error("ssh_key: larger than {MAX_SSH_KEY_BYTES} bytes")]
    KeyTooLarge,
    #[error("ssh_key: must be one line")]
    KeyLines,
    #[error("ssh_key: contains control characters")]
    KeyControl,
    #[error(
        "ssh_key: unknown key type {0:?} (expected e.g. ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256)"
    )]
    KeyType(String),
    #[error("ssh_key: the key data after the type is missing or not base64")]
    KeyData,
    #[error("user_data: larger than {MAX_USER_DATA_BYTES} bytes")]
    UserDataTooLarge,
}

/// Checks an OpenSSH public key and returns it without surrounding whitespace (a key read from a
/// `.pub` file ends with a newline).
pub fn validate_ssh_key(key: &str) -> Result<String, GuestInputError> {
    if key.len() > MAX_SSH_KEY_BYTES {
        return Err(GuestInputError::KeyTooLarge);
    }
    let key = key.trim();
    if key.contains(['\n', '\r']) {
        return Err(GuestInputError::KeyLines);
    }
    if key.chars().any(char::is_control) {
        return Err(GuestInputError::KeyControl);
    }
    let mut fields = key.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    if !KEY_TYPES.contains(&kind) {
        return Err(GuestInputError::KeyType(kind.chars().take(40).collect()));
    }
    let data = fields.next().unwrap_or_default();
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if data.len() < 16 || !data.bytes().all(base64) {
        return Err(GuestInputError::KeyData);
    }
    Ok(key.to_owned())
}

/// Checks user data: any text up to 64 KiB.
pub fn validate_user_data(data: &str) -> Result<(), GuestInputError> {
    if data.len() > MAX_USER_DATA_BYTES {
        return Err(GuestInputError::UserDataTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGmQ0f0d7ZB4n0c1dM1K8Gv6o1iVd6p7yX0P3rQm1Ys+ jane@laptop";

    #[test]
    fn a_pub_file_line_is_accepted_and_trimmed() {
        assert_eq!(
            validate_ssh_key(&format!("{ED25519}\n")),
            Ok(ED25519.into())
        );
        let no_comment = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAI";
        assert_eq!(validate_ssh_key(no_comment), Ok(no_comment.into()));
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        assert_eq!(
            validate_ssh_key(&format!("{ED25519}\n{ED25519}")),
            Err(GuestInputError::KeyLines)
        );
        assert_eq!(
            validate_ssh_key(&format!("command=\"sh\" {ED25519}")),
            Err(GuestInputError::KeyType("command=\"sh\"".into()))
        );
        assert_eq!(
            validate_ssh_key("-----BEGIN OPENSSH PRIVATE KEY-----"),
            Err(GuestInputError::KeyType("-----BEGIN".into()))
        );
        assert_eq!(validate_ssh_key("ssh-rsa"), Err(GuestInputError::KeyData));
        assert_eq!(
            validate_ssh_key("ssh-rsa AAAA<script>AAAAAAAAAAAA"),
            Err(GuestInputError::KeyData)
        );
        assert_eq!(
            validate_ssh_key("ssh-rsa AAAAB3NzaC1yc2EAAAA\u{7}x"),
            Err(GuestInputError::KeyControl)
        );
        assert_eq!(
            validate_ssh_key(""),
            Err(GuestInputError::KeyType(String::new()))
        );
        let huge = format!("ssh-rsa {}", "A".repeat(MAX_SSH_KEY_BYTES));
        assert_eq!(validate_ssh_key(&huge), Err(GuestInputError::KeyTooLarge));
    }

    #[test]
    fn user_data_is_bounded() {
        assert_eq!(validate_user_data("#!/bin/sh\necho hi\n"), Ok(()));
        assert_eq!(validate_user_data(&"x".repeat(MAX_USER_DATA_BYTES)), Ok(()));
        assert_eq!(
            validate_user_data(&"x".repeat(MAX_USER_DATA_BYTES + 1)),
            Err(GuestInputError::UserDataTooLarge)
        );
    }
}
