//! Validation of names that users choose (instance names, image names, user names). A valid name
//! can go into a file name, a log line or an XML attribute without escaping, but we still escape
//! everywhere: validation is the first fence, not the only one.

use thiserror::Error;

/// The longest name we accept, in bytes (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {MAX_NAME_LEN} characters")]
    TooLong { field: &'static str },
    #[error("{field} may contain only letters, digits, '.', '_' and '-' (found {found:?})")]
    BadChar { field: &'static str, found: char },
    #[error("{field} must start with a letter or a digit")]
    BadStart { field: &'static str },
}

/// Checks a user-chosen name: 1 to 63 characters out of `[A-Za-z0-9._-]`, starting with a letter
/// or digit (so `..`, `-rf` and `/etc` are all refused). `field` names the input in the error.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty { field })?;
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { field });
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar { field, found });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart { field });
    }
    Ok(())
}

/// Checks a lowercase hex SHA-256 digest.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["web-1", "db.example", "A_b-9", "x"] {
            assert_eq!(validate_name("name", n), Ok(()), "{n}");
        }
    }

    #[test]
    fn refuses_markup_paths_and_traversal() {
        assert_eq!(
            validate_name("name", "a<'&/../"),
            Err(NameError::BadChar {
                field: "name",
                found: '<'
            })
        );
        assert_eq!(
            validate_name("name", "../etc"),
            Err(NameError::BadChar {
                field: "name",
                found: '/'
            })
        );
        assert_eq!(
            validate_name("name", ".."),
            Err(NameError::BadStart { field: "name" })
        );
        assert_eq!(
            validate_name("name", "-rf"),
            Err(NameError::BadStart { field: "name" })
        );
        assert_eq!(
            validate_name("name", ""),
            Err(NameError::Empty { field: "name" })
        );
        assert_eq!(
            validate_name("name", &"a".repeat(64)),
            Err(NameError::TooLong { field: "name" })
        );
        assert!(validate_name("name", "é").is_err());
    }

    #[test]
    fn sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("abc"));
    }
}
