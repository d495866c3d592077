//! What the commands print, as pure functions from data to text, in the user's guide's style:
//! the ` :: ` action banners and steps of the original client, its fixed-width instance table,
//! `[ERROR] ` lines, and pretty JSON for `--json`.

use serde::Serialize;
use stratus_common::api::{Instance, InstanceState, InstanceType};

/// A banner, as the original `printAction`: a blank line, then the message boxed in colons.
fn action(message: &str) -> String {
    let filler = ":".repeat(message.len() + 6);
    format!("\n {filler}\n :: {message} ::\n {filler}\n")
}

/// One step, as the original `printStep`.
fn step(message: &str) -> String {
    format!(" :: {message}\n")
}

/// The banner and first step of `run-instance`, printed before the first request.
pub fn render_run_header(count: u32) -> String {
    let label = if count == 1 { "machine" } else { "machines" };
    action("Starting machine(s)") + &step(&format!("Starting {count} {label}"))
}

/// The line for the `index`-th (from 1) instance started.
pub fn render_run_machine(index: usize, instance: &Instance) -> String {
    step(&format!("Machine {index} (vm ID: {})", instance.id))
}

pub fn render_run_done() -> String {
    step("Done!")
}

/// The whole `run-instance` output for instances started in one go (the command streams the
/// same pieces as it goes).
#[cfg(test)]
pub fn render_run(instances: &[Instance]) -> String {
    let count = u32::try_from(instances.len()).unwrap_or(u32::MAX);
    let mut out = render_run_header(count);
    for (i, instance) in instances.iter().enumerate() {
        out += &render_run_machine(i + 1, instance);
    }
    out + &render_run_done()
}

/// `run-instance --quiet`: one ID per line.
pub fn render_id(instance: &Instance) -> String {
    format!("{}\n", instance.id)
}

/// `--json`: the value pretty-printed, with a final newline.
pub fn render_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising our own plain data structs cannot fail (string keys, no custom serialisers).
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// One `kill-instance` confirmation.
pub fn render_kill(instance: &Instance) -> String {
    step(&format!(
        "Killing instance {} (now {})",
        instance.id, instance.state
    ))
}

/// An error line for stderr.
pub fn render_error(message: &str) -> String {
    format!("[ERROR] {message}\n")
}

/// A warning line for stderr.
pub fn render_warning(message: &str) -> String {
    format!("[WARNING] {message}\n")
}

/// `build-metadata -o FILE`: what was written.
pub fn render_metadata_written(identifier: &str, path: &str) -> String {
    step(&format!(
        "Metadata for image {identifier} written to {path}"
    ))
}

/// `sign-metadata -o FILE`: what was signed, by whom.
pub fn render_metadata_signed(identifier: &str, email: &str, path: &str) -> String {
    step(&format!(
        "Metadata for image {identifier} signed as {email}, written to {path}"
    ))
}

/// Column labels and minimum widths of `describe-instance`, as the original client's table
/// (which grew a column to one more than its longest value). The last column is not padded.
const INSTANCE_COLUMNS: [(&str, usize); 6] = [
    ("id", 4),
    ("state", 10),
    ("vcpu", 5),
    ("memory", 10),
    ("name", 16),
    ("host", 0),
];

/// The `describe-instance` table. Memory is in KiB as in the guide (131072 for 128 MiB); an
/// instance that Failed gets its reason on the next line, indented under the state.
pub fn render_instance_table(instances: &[Instance]) -> String {
    let rows: Vec<[String; 6]> = instances
        .iter()
        .map(|i| {
            [
                i.id.to_string(),
                i.state.to_string(),
                i.vcpus.to_string(),
                i.memory_mib.saturating_mul(1024).to_string(),
                i.name.clone(),
                i.host.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let widths: Vec<usize> = INSTANCE_COLUMNS
        .iter()
        .enumerate()
        .map(|(c, (_, min))| {
            let longest = rows.iter().map(|r| r[c].len()).max().unwrap_or(0);
            (*min).max(longest + 1)
        })
        .collect();
    let line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (c, cell) in cells.iter().enumerate() {
            if c + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}", width = widths[c]));
            }
        }
        text.push('\n');
        text
    };

    let mut out = line(INSTANCE_COLUMNS.map(|(label, _)| label));
    for (instance, row) in instances.iter().zip(&rows) {
        out += &line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
        if let (InstanceState::Failed, Some(reason)) = (instance.state, &instance.reason) {
            let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
            out += &format!("{:indent$}{reason}\n", "", indent = widths[0]);
        }
    }
    out
}

/// The `run-instance --list-types` table, in the original client's layout (a type column, then
/// right-aligned values with their units).
pub fn render_types_table(types: &[InstanceType]) -> String {
    const VALUE_WIDTH: usize = 10;
    let name_width = types
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(VALUE_WIDTH);
    let line = |name: &str, cpu: &str, ram: &str, disk: &str| {
        format!(
            "{name:<name_width$} {cpu:>VALUE_WIDTH$} {ram:>VALUE_WIDTH$} {disk:>VALUE_WIDTH$}\n"
        )
    };
    let mut out = line("Type", "CPU", "RAM", "Disk");
    for t in types {
        out += &line(
            &t.name,
            &format!("{} CPU", t.vcpus),
            &format!("{} MiB", t.memory_mib),
            &format!("{} GiB", t.disk_gib),
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An instance as the API would show it, for rendering tests.
    pub(crate) fn instance(id: u64, state: InstanceState) -> Instance {
        Instance {
            id,
            name: format!("vm-{id}"),
            owner: "alice".into(),
            image: "ttylinux".into(),
            instance_type: "m1.small".into(),
            vcpus: 1,
            memory_mib: 128,
            host: Some("node-1".into()),
            state,
            reason: None,
            domain: format!("one-{id}"),
            created: "2024-05-01T10:00:00Z".into(),
            updated: "2024-05-01T10:00:00Z".into(),
            history: Vec::new(),
        }
    }

    #[test]
    fn metadata_steps_and_warnings() {
        assert_eq!(
            render_metadata_written("Y1eUkuvLYkdEPIbC0IkhELmre4o", "m.json"),
            " :: Metadata for image Y1eUkuvLYkdEPIbC0IkhELmre4o written to m.json\n"
        );
        assert_eq!(
            render_metadata_signed("X", "jane@example.org", "s.json"),
            " :: Metadata for image X signed as jane@example.org, written to s.json\n"
        );
        assert_eq!(render_warning("careful"), "[WARNING] careful\n");
    }

    #[test]
    fn run_output_is_the_guides() {
        assert_eq!(
            render_run(&[instance(5507, InstanceState::Pending)]),
            "
 :::::::::::::::::::::::::
 :: Starting machine(s) ::
 :::::::::::::::::::::::::
 :: Starting 1 machine
 :: Machine 1 (vm ID: 5507)
 :: Done!
"
        );
    }

    #[test]
    fn run_output_for_several_machines() {
        let started = [
            instance(7, InstanceState::Pending),
            instance(8, InstanceState::Pending),
        ];
        assert_eq!(
            render_run(&started),
            "
 :::::::::::::::::::::::::
 :: Starting machine(s) ::
 :::::::::::::::::::::::::
 :: Starting 2 machines
 :: Machine 1 (vm ID: 7)
 :: Machine 2 (vm ID: 8)
 :: Done!
"
        );
    }

    #[test]
    fn quiet_and_kill_and_error_lines() {
        let i = instance(5507, InstanceState::Stopping);
        assert_eq!(render_id(&i), "5507\n");
        assert_eq!(
            render_kill(&i),
            " :: Killing instance 5507 (now Stopping)\n"
        );
        assert_eq!(
            render_error("instance 42 not found"),
            "[ERROR] instance 42 not found\n"
        );
    }

    #[test]
    fn instance_table_has_the_guides_columns_and_kib() {
        let mut running = instance(5507, InstanceState::Running);
        running.host = Some("vm-75.lal.stratuslab.eu".into());
        let mut pending = instance(12, InstanceState::Pending);
        pending.host = None;
        pending.vcpus = 2;
        pending.memory_mib = 2048;
        assert_eq!(
            render_instance_table(&[running, pending]),
            "\
id   state     vcpu memory    name            host
5507 Running   1    131072    vm-5507         vm-75.lal.stratuslab.eu
12   Pending   2    2097152   vm-12           -
"
        );
    }

    #[test]
    fn instance_table_grows_columns_for_long_values() {
        let mut i = instance(123456, InstanceState::Running);
        i.name = "a-rather-long-instance-name".into();
        assert_eq!(
            render_instance_table(&[i]),
            "\
id     state     vcpu memory    name                        host
123456 Running   1    131072    a-rather-long-instance-name node-1
"
        );
    }

    #[test]
    fn failed_instances_show_their_reason_under_the_row() {
        let mut failed = instance(9, InstanceState::Failed);
        failed.host = None;
        failed.reason = Some("no host has room for\n m1.xlarge".into());
        assert_eq!(
            render_instance_table(&[failed]),
            "\
id  state     vcpu memory    name            host
9   Failed    1    131072    vm-9            -
    no host has room for m1.xlarge
"
        );
    }

    #[test]
    fn empty_instance_table_is_the_header() {
        assert_eq!(
            render_instance_table(&[]),
            "id  state     vcpu memory    name            host\n"
        );
    }

    #[test]
    fn types_table() {
        let types = [
            InstanceType {
                name: "m1.small".into(),
                vcpus: 1,
                memory_mib: 128,
                disk_gib: 1,
            },
            InstanceType {
                name: "c1.xlarge".into(),
                vcpus: 4,
                memory_mib: 2048,
                disk_gib: 20,
            },
        ];
        assert_eq!(
            render_types_table(&types),
            "\
Type              CPU        RAM       Disk
m1.small        1 CPU    128 MiB      1 GiB
c1.xlarge       4 CPU   2048 MiB     20 GiB
"
        );
    }

    #[test]
    fn json_is_pretty_with_a_final_newline() {
        let text = render_json(&[instance(1, InstanceState::Running)]);
        assert!(text.starts_with("[\n  {\n    \"id\": 1,\n"), "{text}");
        assert!(text.ends_with("}\n]\n"), "{text}");
        let back: Vec<Instance> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![instance(1, InstanceState::Running)]);
    }
}
