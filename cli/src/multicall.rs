//! The classic command names: the binary installed (or linked) as `stratus-run-instance` behaves
//! as `stratus run-instance`, so every `stratus-X` name maps to the subcommand `X`.

use std::ffi::OsString;
use std::path::Path;

/// The prefix of the classic names.
pub const PREFIX: &str = "stratus-";

/// The subcommand named by how the program was invoked (argv[0]), if it is a `stratus-X` name.
pub fn subcommand_from_program_name(argv0: &Path) -> Option<String> {
    let name = argv0.file_name()?.to_str()?;
    let sub = name.strip_prefix(PREFIX)?;
    (!sub.is_empty()).then(|| sub.to_string())
}

/// Rewrites `stratus-X ARGS...` into `stratus X ARGS...`; any other invocation is unchanged.
pub fn expand_args(args: Vec<OsString>) -> Vec<OsString> {
    let Some(sub) = args
        .first()
        .and_then(|argv0| subcommand_from_program_name(Path::new(argv0)))
    else {
        return args;
    };
    let mut expanded = Vec::with_capacity(args.len() + 1);
    expanded.push(OsString::from("stratus"));
    expanded.push(OsString::from(sub));
    expanded.extend(args.into_iter().skip(1));
    expanded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: &[&str]) -> Vec<String> {
        expand_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn classic_names_become_subcommands() {
        assert_eq!(
            expand(&["stratus-run-instance", "-S", "fav", "ttylinux"]),
            ["stratus", "run-instance", "-S", "fav", "ttylinux"]
        );
        assert_eq!(
            expand(&["/usr/bin/stratus-describe-instance", "5507"]),
            ["stratus", "describe-instance", "5507"]
        );
        assert_eq!(
            expand(&["./stratus-kill-instance"]),
            ["stratus", "kill-instance"]
        );
        assert_eq!(expand(&["stratus-copy-config"]), ["stratus", "copy-config"]);
        assert_eq!(
            expand(&["stratus-build-metadata", "disk.img"]),
            ["stratus", "build-metadata", "disk.img"]
        );
        assert_eq!(
            expand(&["/usr/bin/stratus-sign-metadata", "m.json"]),
            ["stratus", "sign-metadata", "m.json"]
        );
        for name in [
            "upload-metadata",
            "describe-images",
            "policy-image",
            "deprecate-metadata",
            "describe-endorsers",
            "register-endorser",
            "create-volume",
            "describe-volumes",
            "update-volume",
            "delete-volume",
            "attach-volume",
            "detach-volume",
            "create-group",
            "describe-groups",
            "delete-group",
            "fence-host",
        ] {
            assert_eq!(
                expand(&[&format!("/usr/bin/stratus-{name}"), "x"]),
                ["stratus", name, "x"]
            );
        }
    }

    #[test]
    fn other_names_are_left_alone() {
        assert_eq!(
            expand(&["/usr/bin/stratus", "run-instance", "x"]),
            ["/usr/bin/stratus", "run-instance", "x"]
        );
        assert_eq!(expand(&["stratus-"]), ["stratus-"]);
        assert_eq!(
            expand(&["my-stratus-run-instance"]),
            ["my-stratus-run-instance"]
        );
        assert_eq!(expand(&[]), Vec::<String>::new());
    }

    #[test]
    fn program_name_mapping() {
        assert_eq!(
            subcommand_from_program_name(Path::new("/opt/bin/stratus-run-instance")),
            Some("run-instance".to_string())
        );
        assert_eq!(subcommand_from_program_name(Path::new("stratus")), None);
    }
}
