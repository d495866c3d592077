//! The reports waiting for the controller: the latest state per instance, volume, export and
//! persistent disk, the unknown domains and the image cache's contents, merged while a report
//! is on its way and sent again until delivered ([`report_loop`]). It also carries the
//! confirmations a fresh start waits for: the controller must have recorded the instance
//! Booting on this host before its guest is created (see `Reconciler::start`), so an instance
//! still Pending in the controller's state never runs, and may be placed elsewhere.

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use stratus_common::agent::{
    ActualState, HostReport, ReportAnswer, ReportedDisk, ReportedExport, ReportedInstance,
    ReportedVolume,
};
use tokio::sync::mpsc;

use crate::controller_client::ControllerClient;
use crate::failure::error_chain;
use crate::reconcile::ReportEvent;

/// The controller's word on a start's Booting report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// Recorded: the guest may start.
    Recorded,
    /// Refused (the instance is no longer placed here), with the controller's reason.
    Refused(String),
}

/// A fresh start asking the controller to record its instance Booting on this host.
#[derive(Debug, Clone)]
pub struct ConfirmStart {
    pub id: u64,
    pub answer: SyncSender<Confirmation>,
}

impl PartialEq for ConfirmStart {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ConfirmStart {}

/// Reports waiting to be delivered.
#[derive(Debug, Default)]
pub struct Outbox {
    instances: BTreeMap<u64, ReportedInstance>,
    unknown: Vec<String>,
    unknown_changed: bool,
    images: Option<Vec<String>>,
    volumes: BTreeMap<String, ReportedVolume>,
    exports: BTreeMap<String, ReportedExport>,
    disks: BTreeMap<(u64, String), ReportedDisk>,
    confirmations: Vec<ConfirmStart>,
}

impl Outbox {
    /// Adds `event`, replacing what was waiting about the same thing.
    pub fn merge(&mut self, event: ReportEvent) {
        match event {
            ReportEvent::Instance(item) => {
                self.instances.insert(item.id, item);
            }
            ReportEvent::ConfirmStart(confirm) => {
                self.instances.insert(
                    confirm.id,
                    ReportedInstance {
                        id: confirm.id,
                        state: ActualState::Booting,
                        reason: None,
                    },
                );
                self.confirmations.push(confirm);
            }
            ReportEvent::UnknownDomains(list) => {
                self.unknown = list;
                self.unknown_changed = true;
            }
            ReportEvent::Images(list) => self.images = Some(list),
            ReportEvent::Volume(item) => {
                self.volumes.insert(item.id.clone(), item);
            }
            ReportEvent::Export(item) => {
                self.exports.insert(item.name.clone(), item);
            }
            ReportEvent::Disk(item) => {
                self.disks
                    .insert((item.instance, item.volume.clone()), item);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
            && !self.unknown_changed
            && self.images.is_none()
            && self.volumes.is_empty()
            && self.exports.is_empty()
            && self.disks.is_empty()
    }

    /// The report of everything waiting (the unknown domains always, whole).
    pub fn report(&self) -> HostReport {
        HostReport {
            instances: self.instances.values().cloned().collect(),
            unknown_domains: self.unknown.clone(),
            images: self.images.clone(),
            volumes: self.volumes.values().cloned().collect(),
            exports: self.exports.values().cloned().collect(),
            disks: self.disks.values().cloned().collect(),
        }
    }

    /// The report made by [`Self::report`] was delivered and answered: forgets it and tells the
    /// starts waiting whether their Booting was recorded.
    pub fn delivered(&mut self, answer: &ReportAnswer) {
        for confirm in self.confirmations.drain(..) {
            let word = match answer.refused.iter().find(|r| r.id == confirm.id) {
                Some(refused) => Confirmation::Refused(refused.reason.clone()),
                None => Confirmation::Recorded,
            };
            // A start that stopped waiting is tried again by a later pass.
            let _ = confirm.answer.try_send(word);
        }
        self.instances.clear();
        self.unknown_changed = false;
        self.images = None;
        self.volumes.clear();
        self.exports.clear();
        self.disks.clear();
    }
}

/// Sends reports to the controller, merging what queues up and retrying until delivered.
pub async fn report_loop(
    client: ControllerClient,
    host: String,
    mut events: mpsc::UnboundedReceiver<ReportEvent>,
) {
    let mut outbox = Outbox::default();
    loop {
        if outbox.is_empty() {
            match events.recv().await {
                Some(event) => outbox.merge(event),
                None => return,
            }
        }
        while let Ok(event) = events.try_recv() {
            outbox.merge(event);
        }
        // Events are merged only between sends, so what is answered is what was sent.
        match client.report(&host, &outbox.report()).await {
            Ok(answer) => {
                for refused in &answer.refused {
                    tracing::warn!(instance = refused.id, reason = %refused.reason, "report refused by the controller");
                }
                outbox.delivered(&answer);
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "report failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use stratus_common::agent::RefusedReport;

    use super::*;

    fn instance(id: u64, state: ActualState) -> ReportEvent {
        ReportEvent::Instance(ReportedInstance {
            id,
            state,
            reason: None,
        })
    }

    #[test]
    fn the_latest_state_of_each_instance_goes_and_is_forgotten_once_delivered() {
        let mut outbox = Outbox::default();
        assert!(outbox.is_empty());
        outbox.merge(instance(1, ActualState::Booting));
        outbox.merge(instance(1, ActualState::Running));
        outbox.merge(instance(2, ActualState::Stopped));
        outbox.merge(ReportEvent::UnknownDomains(vec!["stray".into()]));
        let report = outbox.report();
        let states: Vec<_> = report.instances.iter().map(|i| (i.id, i.state)).collect();
        assert_eq!(
            states,
            [(1, ActualState::Running), (2, ActualState::Stopped)]
        );
        assert_eq!(report.unknown_domains, ["stray"]);
        outbox.delivered(&ReportAnswer::default());
        assert!(outbox.is_empty());
        // The unknown domains ride along with every later report.
        outbox.merge(instance(3, ActualState::Gone));
        assert_eq!(outbox.report().unknown_domains, ["stray"]);
    }

    #[test]
    fn a_start_learns_whether_its_booting_was_recorded_or_refused() {
        let mut outbox = Outbox::default();
        let (recorded_tx, recorded) = sync_channel(1);
        let (refused_tx, refused) = sync_channel(1);
        outbox.merge(ReportEvent::ConfirmStart(ConfirmStart {
            id: 7,
            answer: recorded_tx,
        }));
        outbox.merge(ReportEvent::ConfirmStart(ConfirmStart {
            id: 8,
            answer: refused_tx,
        }));
        let report = outbox.report();
        assert!(report
            .instances
            .iter()
            .all(|i| i.state == ActualState::Booting));
        // Not delivered yet: nobody is answered.
        assert!(recorded.try_recv().is_err());
        outbox.delivered(&ReportAnswer {
            refused: vec![RefusedReport {
                id: 8,
                reason: "instance 8 is not placed on host h1".into(),
            }],
        });
        assert_eq!(recorded.try_recv(), Ok(Confirmation::Recorded));
        assert_eq!(
            refused.try_recv(),
            Ok(Confirmation::Refused(
                "instance 8 is not placed on host h1".into()
            ))
        );
        // A start that gave up waiting is no trouble.
        let (gone_tx, gone) = sync_channel(1);
        drop(gone);
        outbox.merge(ReportEvent::ConfirmStart(ConfirmStart {
            id: 9,
            answer: gone_tx,
        }));
        outbox.delivered(&ReportAnswer::default());
        assert!(outbox.is_empty());
    }
}
