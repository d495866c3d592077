//! The storage side of a host with a volume pool: makes and deletes the volumes the controller
//! places here, and serves the NBD exports that instances on other hosts use, one per
//! attachment. Each pass runs whole on a blocking thread; passes never overlap.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use stratus_common::agent::{
    DesiredExport, DesiredVolume, ReportedExport, ReportedVolume, VolumeReport,
};
use tokio::sync::mpsc;

use super::{error_chain, ReportEvent};
use crate::volumes::nbd::NbdExports;
use crate::volumes::pool::VolumePool;

pub struct Storage {
    pool: Arc<VolumePool>,
    exports: NbdExports,
    reports: mpsc::UnboundedSender<ReportEvent>,
    busy: AtomicBool,
    /// What was last reported, so a pass repeats nothing.
    reported: Mutex<Reported>,
}

#[derive(Default)]
struct Reported {
    volumes: HashMap<String, VolumeReport>,
    exports: HashMap<String, (String, u16)>,
}

impl Storage {
    pub fn new(
        pool: Arc<VolumePool>,
        exports: NbdExports,
        reports: mpsc::UnboundedSender<ReportEvent>,
    ) -> Self {
        Self {
            pool,
            exports,
            reports,
            busy: AtomicBool::new(false),
            reported: Mutex::new(Reported::default()),
        }
    }

    pub fn pool(&self) -> &Arc<VolumePool> {
        &self.pool
    }

    /// Claims the next pass; `false` while one runs.
    pub fn begin(&self) -> bool {
        !self.busy.swap(true, Ordering::AcqRel)
    }

    /// One pass (after a successful [`Self::begin`]).
    pub fn reconcile(&self, volumes: &[DesiredVolume], exports: &[DesiredExport]) {
        self.sync_volumes(volumes);
        self.sync_exports(exports);
        self.busy.store(false, Ordering::Release);
    }

    fn report_volume(&self, id: &str, state: VolumeReport, reason: Option<String>) {
        let mut reported = self.reported.lock().expect("storage lock");
        if reported.volumes.get(id) == Some(&state) {
            return;
        }
        reported.volumes.insert(id.to_owned(), state);
        let _ = self.reports.send(ReportEvent::Volume(ReportedVolume {
            id: id.to_owned(),
            state,
            reason,
        }));
    }

    fn sync_volumes(&self, volumes: &[DesiredVolume]) {
        for volume in volumes {
            let _span = tracing::info_span!("volume", id = %volume.id).entered();
            if volume.present {
                match self.pool.create(&volume.id, volume.size_bytes) {
                    Ok(_) => self.report_volume(&volume.id, VolumeReport::Ready, None),
                    Err(e) => {
                        let reason = error_chain(&e);
                        tracing::warn!(%reason, "cannot make the volume");
                        self.report_volume(&volume.id, VolumeReport::Failed, Some(reason));
                    }
                }
            } else {
                match self.pool.delete(&volume.id) {
                    Ok(_) => self.report_volume(&volume.id, VolumeReport::Deleted, None),
                    Err(e) => {
                        tracing::warn!(reason = %error_chain(&e), "cannot delete the volume; will retry")
                    }
                }
            }
        }
        let listed: HashSet<&str> = volumes.iter().map(|v| v.id.as_str()).collect();
        self.reported
            .lock()
            .expect("storage lock")
            .volumes
            .retain(|id, _| listed.contains(id.as_str()));
    }

    fn sync_exports(&self, exports: &[DesiredExport]) {
        let wanted: HashSet<&str> = exports.iter().map(|e| e.name.as_str()).collect();
        // Stop first what is no longer wanted: its attachment is gone.
        for (name, _) in self.exports.list() {
            if !wanted.contains(name.as_str()) {
                match self.exports.stop(&name) {
                    Ok(_) => tracing::info!(export = %name, "export stopped"),
                    Err(e) => {
                        tracing::warn!(export = %name, reason = %error_chain(&e), "cannot stop the export; will retry")
                    }
                }
            }
        }
        for export in exports {
            let _span = tracing::info_span!("export", volume = %export.volume).entered();
            let path = match self.pool.path(&export.volume) {
                Ok(path) => path,
                Err(e) => {
                    tracing::warn!(reason = %error_chain(&e), "bad volume in an export");
                    continue;
                }
            };
            match self
                .exports
                .start(&export.name, &path, export.read_only, &export.client)
            {
                Ok(endpoint) => {
                    let at = (endpoint.host.clone(), endpoint.port);
                    let mut reported = self.reported.lock().expect("storage lock");
                    if reported.exports.get(&export.name) != Some(&at) {
                        reported.exports.insert(export.name.clone(), at);
                        tracing::info!(port = endpoint.port, "export listening");
                        let _ = self.reports.send(ReportEvent::Export(ReportedExport {
                            name: export.name.clone(),
                            host: endpoint.host,
                            port: endpoint.port,
                        }));
                    }
                }
                Err(e) => {
                    tracing::warn!(reason = %error_chain(&e), "cannot start the export; will retry")
                }
            }
        }
        self.reported
            .lock()
            .expect("storage lock")
            .exports
            .retain(|name, _| wanted.contains(name.as_str()));
    }
}
