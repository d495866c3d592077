//! Administrators' commands for hosts: list them (`stratus-describe-hosts`), put one in
//! maintenance or back in service and set its roles and labels (`stratus-update-host`), remove
//! one from the cloud (`stratus-remove-host`), make the one-time join token a new host enrols
//! with (`stratus-create-join-token`) and revoke a host's certificates (`stratus-revoke-host`).
//!
//! Here: what they share with `stratus-run-instance --label`, host labels as users type them.

pub mod describe;
pub mod fence;
pub mod join_token;
pub mod remove;
pub mod revoke;
pub mod update;

use stratus_common::names::validate_name;

/// A host label from the command line (`ssd`), trimmed and checked as the cloud will (letters,
/// digits, `.`, `_`, `-`).
pub fn parse_label(value: &str) -> Result<String, String> {
    let label = value.trim();
    validate_name("label", label)
        .map(|()| label.to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_trimmed_and_checked() {
        assert_eq!(parse_label(" ssd ").unwrap(), "ssd");
        assert_eq!(parse_label("rack-2.a_b").unwrap(), "rack-2.a_b");
        assert_eq!(parse_label("").unwrap_err(), "label must not be empty");
        for bad in ["a b", "../x", "-x", "x=y"] {
            assert!(parse_label(bad).is_err(), "{bad:?}");
        }
    }
}
