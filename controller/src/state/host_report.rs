//! A host's whole report as one command: what its agent says of its instances, volumes,
//! exports and disks in one call becomes one Raft entry, not one per item. Apply takes it
//! apart into the single reports and applies them one after the other, each as it would have
//! been applied alone (wrapped in the host's [`Command::By`]), so the state, the events and
//! the audit records are what the single reports made.

use stratus_common::agent::{ReportedDisk, ReportedExport, ReportedInstance, ReportedVolume};

use super::{Command, Effects, Outcome, Rejection, State};

/// A [`Command::HostReport`] taken out of the [`Command::By`] around it, if any.
pub(super) struct HostReport {
    /// Who asked (the host) and when: given to every single report.
    pub(super) by: Option<(String, u64)>,
    pub(super) host: String,
    pub(super) instances: Vec<ReportedInstance>,
    pub(super) volumes: Vec<ReportedVolume>,
    pub(super) exports: Vec<ReportedExport>,
    pub(super) disks: Vec<ReportedDisk>,
    pub(super) at_ms: u64,
}

/// What each item of a host's report came to, in the report's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOutcomes {
    /// One per reported instance.
    pub instances: Vec<Result<Outcome, Rejection>>,
    /// One per reported volume, then export, then disk.
    pub storage: Vec<Result<Outcome, Rejection>>,
}

impl HostReport {
    /// The report `command` is, alone or in one [`Command::By`]; any other command comes back.
    // Any other command comes back by value, to be applied: boxing it would allocate for each.
    #[allow(clippy::result_large_err)]
    pub(super) fn split(command: Command) -> Result<Self, Command> {
        let (by, report) = match command {
            Command::By {
                actor,
                at_ms,
                command,
            } if matches!(*command, Command::HostReport { .. }) => (Some((actor, at_ms)), *command),
            report @ Command::HostReport { .. } => (None, report),
            other => return Err(other),
        };
        match report {
            Command::HostReport {
                host,
                instances,
                volumes,
                exports,
                disks,
                at_ms,
            } => Ok(Self {
                by,
                host,
                instances,
                volumes,
                exports,
                disks,
                at_ms,
            }),
            // Not reached: both arms above hold a report.
            other => Err(other),
        }
    }
}

impl State {
    /// Applies every item of `report` as its single report, in order; a refused item leaves
    /// the others be. The effects are those of the single reports, one after the other.
    pub(super) fn apply_host_report(
        &mut self,
        report: HostReport,
    ) -> (Result<Outcome, Rejection>, Effects) {
        let HostReport {
            by,
            host,
            instances,
            volumes,
            exports,
            disks,
            at_ms,
        } = report;
        let mut effects = Effects::default();
        let mut outcomes = ReportOutcomes::default();
        for item in instances {
            let single = Command::ReportInstance {
                host: host.clone(),
                id: item.id,
                state: item.state,
                reason: item.reason,
                at_ms,
            };
            let outcome = self.apply_report_item(&by, single, &mut effects);
            outcomes.instances.push(outcome);
        }
        let volumes = volumes.into_iter().map(|item| Command::ReportVolume {
            host: host.clone(),
            id: item.id,
            state: item.state,
            reason: item.reason,
        });
        let exports = exports.into_iter().map(|export| Command::ReportExport {
            host: host.clone(),
            export,
        });
        let disks = disks.into_iter().map(|disk| Command::ReportDisk {
            host: host.clone(),
            disk,
            at_ms,
        });
        for single in volumes.chain(exports).chain(disks) {
            let outcome = self.apply_report_item(&by, single, &mut effects);
            outcomes.storage.push(outcome);
        }
        (Ok(Outcome::HostReported(outcomes)), effects)
    }

    /// Applies one single report, wrapped as the whole report was, and adds its effects.
    fn apply_report_item(
        &mut self,
        by: &Option<(String, u64)>,
        single: Command,
        effects: &mut Effects,
    ) -> Result<Outcome, Rejection> {
        let command = match by {
            Some((actor, at_ms)) => Command::By {
                actor: actor.clone(),
                at_ms: *at_ms,
                command: Box::new(single),
            },
            None => single,
        };
        let (outcome, made) = self.apply_single(command);
        effects.events.extend(made.events);
        effects.hosts.extend(made.hosts);
        effects.at_ms = effects.at_ms.or(made.at_ms);
        outcome
    }
}
