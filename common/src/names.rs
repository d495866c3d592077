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

/// Why a free text (a tag, a description, a command line) was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TextError {
    #[error("{field}: at most {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field}: control characters are not allowed (found U+{found:04X})")]
    Control { field: &'static str, found: u32 },
    #[error("{field}: bidirectional formatting characters are not allowed (found U+{found:04X})")]
    Bidi { field: &'static str, found: u32 },
}

/// Whether `c` changes the direction text is shown in (the "Trojan Source" characters): a name
/// or tag holding one can show an operator something other than what it is.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks a free text users choose (tags, descriptions, kernel command lines): at most `max`
/// bytes, no control characters (tabs and newlines included) and no bidirectional formatting
/// characters. `field` names the input in the error.
pub fn validate_text(field: &'static str, text: &str, max: usize) -> Result<(), TextError> {
    if text.len() > max {
        return Err(TextError::TooLong { field, max });
    }
    for c in text.chars() {
        if c.is_control() {
            return Err(TextError::Control {
                field,
                found: c as u32,
            });
        }
        if is_bidi_control(c) {
            return Err(TextError::Bidi {
                field,
                found: c as u32,
            });
        }
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
    fn texts_refuse_controls_and_direction_overrides() {
        assert_eq!(validate_text("tag", "my disk — ünïcode ok", 64), Ok(()));
        assert_eq!(
            validate_text("tag", "a\nb", 64),
            Err(TextError::Control {
                field: "tag",
                found: 0x0a
            })
        );
        for c in ['\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}'] {
            let err = validate_text("tag", &format!("invoice{c}fdp.exe"), 64).unwrap_err();
            assert_eq!(
                err,
                TextError::Bidi {
                    field: "tag",
                    found: c as u32
                }
            );
            assert!(err.to_string().starts_with("tag: bidirectional"), "{err}");
        }
        assert_eq!(
            validate_text("tag", &"x".repeat(65), 64),
            Err(TextError::TooLong {
                field: "tag",
                max: 64
            })
        );
    }

    #[test]
    fn sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("abc"));
    }
}
