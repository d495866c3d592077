//! Server group commands: create a group (`stratus-create-group`), list groups and their members
//! (`stratus-describe-groups`) and delete groups (`stratus-delete-group`). Instances started with
//! `stratus-run-instance --group NAME` are placed by their group's policy: all on one host
//! (affinity) or each on a host of its own (anti-affinity).
//!
//! Here: what they share, group names and policies as users type them.

pub mod create;
pub mod delete;
pub mod describe;

use clap::ValueEnum;
use stratus_common::api::GroupPolicy;
use stratus_common::names::validate_name;

/// A group name from the command line, checked as the cloud will (letters, digits, `.`, `_`,
/// `-`).
pub fn parse_group_name(value: &str) -> Result<String, String> {
    validate_name("group", value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// `--policy`: the group policies, as users write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Every instance of the group on one host
    #[value(name = "affinity")]
    Affinity,
    /// Each instance of the group on a host of its own
    #[value(name = "anti-affinity")]
    AntiAffinity,
}

impl From<PolicyArg> for GroupPolicy {
    fn from(arg: PolicyArg) -> Self {
        match arg {
            PolicyArg::Affinity => Self::Affinity,
            PolicyArg::AntiAffinity => Self::AntiAffinity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_checked_as_the_cloud_does() {
        assert_eq!(parse_group_name("web-1.a_b").unwrap(), "web-1.a_b");
        for bad in ["", "../x", "-rf", "a b", &"x".repeat(64)] {
            assert!(parse_group_name(bad).is_err(), "{bad:?}");
        }
        assert!(parse_group_name("a/b").unwrap_err().starts_with("group "));
    }

    #[test]
    fn policies_map_to_the_api_ones() {
        assert_eq!(
            GroupPolicy::from(PolicyArg::Affinity),
            GroupPolicy::Affinity
        );
        assert_eq!(
            GroupPolicy::from(PolicyArg::AntiAffinity),
            GroupPolicy::AntiAffinity
        );
        // The names users type are the API's.
        for arg in PolicyArg::value_variants() {
            let name = arg.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(name, GroupPolicy::from(*arg).to_string());
        }
    }
}
