//! Host links for instance NICs: the bridge (optionally with an uplink or a VLAN
//! sub-interface, optionally mirrored into a network namespace) and one persistent tap per
//! NIC. [`RtnetlinkLinks`] does it through rtnetlink and `/dev/net/tun`; [`FakeLinks`]
//! records calls for the logic above.
//!
//! Taps always stay in the root namespace. libvirt opens an `<interface type='ethernet'>`
//! with `managed='no'` by name in its own (root) namespace and refuses to start the domain
//! when no such device exists there ("target managed='no' but specified dev doesn't exist",
//! measured with libvirt 9.0). A tap moved into another namespace after QEMU opened it keeps
//! working, but then every start becomes two-phase and a restart finds no tap. So when the
//! bridge side must live in a namespace, the root-namespace bridge is linked to a bridge of
//! the same name inside it by a veth pair (`<bridge>-v0` in the root namespace, `<bridge>-v1`
//! inside it); anti-spoofing filters see the taps in the root namespace.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVlan};

use super::{validate_ifname, MacAddr, NameError};

/// Errors of link operations.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("invalid VLAN id {0} (1-4094)")]
    Vlan(u16),
    #[error("network namespace {0} does not exist")]
    NoNamespace(String),
    #[error("link {0} does not exist")]
    NotFound(String),
    #[error("link {name} exists but is not a {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
    },
    #[error("cannot {action} {name}")]
    Netlink {
        action: &'static str,
        name: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("cannot {action} {name}")]
    Io {
        action: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A failure a [`FakeLinks`] was told to produce.
    #[error("injected failure: {0}")]
    Injected(String),
}

/// The link operations instance networking needs. Calls block: async callers run them on a
/// blocking thread.
pub trait Links: Send + Sync {
    /// Makes sure bridge `name` exists and is up (an existing bridge is fine). With `uplink`
    /// the uplink is enslaved, or with `vlan` too, the sub-interface `<uplink>.<vlan>` is
    /// created and enslaved instead. With `netns` a bridge of the same name is also made in
    /// that (existing) namespace and joined to the root one by a veth pair.
    fn ensure_bridge(
        &self,
        name: &str,
        netns: Option<&str>,
        uplink: Option<&str>,
        vlan: Option<u16>,
    ) -> Result<(), LinkError>;

    /// Removes bridge `name` (and in `netns` its mirror and the veth pair). Missing is fine.
    fn delete_bridge(&self, name: &str, netns: Option<&str>) -> Result<(), LinkError>;

    /// Creates persistent tap `name` (owned by root) in the root namespace with MAC `mac`,
    /// enslaved to `bridge` and up. An existing tap is reconfigured.
    fn create_tap(&self, name: &str, mac: MacAddr, bridge: &str) -> Result<(), LinkError>;

    /// Deletes tap `name`. `Ok(false)` when there was none.
    fn delete_tap(&self, name: &str) -> Result<bool, LinkError>;

    /// Names of the taps whose name starts with `prefix`, sorted.
    fn list_taps(&self, prefix: &str) -> Result<Vec<String>, LinkError>;
}

/// The veth ends joining a root bridge to its mirror in a namespace.
pub fn veth_names(bridge: &str) -> (String, String) {
    (format!("{bridge}-v0"), format!("{bridge}-v1"))
}

fn netns_path(netns: &str) -> Result<std::path::PathBuf, LinkError> {
    validate_ifname(netns)?;
    let path = std::path::Path::new("/run/netns").join(netns);
    if path.exists() {
        Ok(path)
    } else {
        Err(LinkError::NoNamespace(netns.to_owned()))
    }
}

/// [`Links`] over rtnetlink. Each call runs on a short-lived thread of its own, which enters
/// the target namespace (`setns` only affects the calling thread) and drives rtnetlink on a
/// current-thread tokio runtime, so callers may be on any thread, async runtime or not.
#[derive(Debug, Default, Clone)]
pub struct RtnetlinkLinks;

impl RtnetlinkLinks {
    pub fn new() -> Self {
        Self
    }

    /// Runs `op` with an rtnetlink handle whose socket lives in `netns` (root when `None`).
    fn run<T, F, Fut>(netns: Option<&str>, op: F) -> Result<T, LinkError>
    where
        T: Send,
        F: FnOnce(Handle) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, LinkError>>,
    {
        let ns_file = match netns {
            Some(ns) => Some(File::open(netns_path(ns)?).map_err(|source| LinkError::Io {
                action: "open namespace",
                name: ns.to_owned(),
                source,
            })?),
            None => None,
        };
        let name = netns.unwrap_or("root").to_owned();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    if let Some(file) = &ns_file {
                        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                            |e| LinkError::Io {
                                action: "enter namespace",
                                name: name.clone(),
                                source: e.into(),
                            },
                        )?;
                    }
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()
                        .map_err(|source| LinkError::Io {
                            action: "start netlink runtime for",
                            name: name.clone(),
                            source,
                        })?;
                    runtime.block_on(async {
                        let (connection, handle, _) =
                            rtnetlink::new_connection().map_err(|source| LinkError::Io {
                                action: "open netlink socket in",
                                name: name.clone(),
                                source,
                            })?;
                        let task = tokio::spawn(connection);
                        let result = op(handle).await;
                        task.abort();
                        result
                    })
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// The link named `name`, if any.
async fn find(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(source) => Err(LinkError::Netlink {
            action: "look up link",
            name: name.to_owned(),
            source: Box::new(source),
        }),
    }
}

fn kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn netlink(action: &'static str, name: &str) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let name = name.to_owned();
    move |source| LinkError::Netlink {
        action,
        name,
        source: Box::new(source),
    }
}

/// Index of link `name`, which must exist.
async fn index_of(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    find(handle, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| LinkError::NotFound(name.to_owned()))
}

/// Creates bridge `name` unless it exists, then sets it up; returns its index.
async fn ensure_bridge_here(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    let existing = find(handle, name).await?;
    let index = match existing {
        Some(link) if kind(&link) == Some(&InfoKind::Bridge) => link.header.index,
        Some(_) => {
            return Err(LinkError::WrongKind {
                name: name.to_owned(),
                expected: "bridge",
            })
        }
        None => {
            let created = handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await;
            match created {
                Ok(()) => {}
                // Another agent thread made it in between.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(netlink("create bridge", name)(e)),
            }
            index_of(handle, name).await?
        }
    };
    set_up(handle, index, name, None).await?;
    Ok(index)
}

/// Sets link `index` up, enslaved to `master` when given.
async fn set_up(
    handle: &Handle,
    index: u32,
    name: &str,
    master: Option<u32>,
) -> Result<(), LinkError> {
    let mut message = LinkUnspec::new_with_index(index).up();
    if let Some(master) = master {
        message = message.controller(master);
    }
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .map_err(netlink("set up", name))
}

async fn delete_named(handle: &Handle, name: &str) -> Result<bool, LinkError> {
    let Some(link) = find(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(false),
        Err(e) => Err(netlink("delete link", name)(e)),
    }
}

// TUNSETIFF, TUNSETPERSIST and TUNSETOWNER from <linux/if_tun.h>: _IOW('T', 202..204, int).
const TUNSETIFF: libc::c_ulong =
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()) as libc::c_ulong;
const TUNSETPERSIST: libc::c_ulong =
    nix::request_code_write!(b'T', 203, std::mem::size_of::<libc::c_int>()) as libc::c_ulong;
const TUNSETOWNER: libc::c_ulong =
    nix::request_code_write!(b'T', 204, std::mem::size_of::<libc::c_int>()) as libc::c_ulong;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` attached to tap `name` (created when missing), as QEMU does.
/// Returns the open file: the tap has carrier while it stays open.
pub fn open_tap(name: &str) -> Result<File, LinkError> {
    validate_ifname(name)?;
    let io = |action: &'static str| {
        let name = name.to_owned();
        move |source: std::io::Error| LinkError::Io {
            action,
            name,
            source,
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(io("open /dev/net/tun for"))?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    let cname = CString::new(name).expect("validated names have no NUL");
    for (dst, src) in request.name.iter_mut().zip(cname.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the fd is open and `request` is a properly laid out, NUL-terminated ifreq that
    // outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut request) };
    if rc < 0 {
        return Err(io("attach tap")(std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// Makes tap `name` persistent and owned by root: it outlives the fd that created it.
fn create_persistent_tap(name: &str) -> Result<(), LinkError> {
    let file = open_tap(name)?;
    for (request, value, action) in [
        (TUNSETOWNER, 0, "set owner of tap"),
        (TUNSETPERSIST, 1, "make tap persistent"),
    ] {
        // SAFETY: both requests take an integer argument by value on an attached tun fd.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, value as libc::c_ulong) };
        if rc < 0 {
            return Err(LinkError::Io {
                action,
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

impl Links for RtnetlinkLinks {
    fn ensure_bridge(
        &self,
        name: &str,
        netns: Option<&str>,
        uplink: Option<&str>,
        vlan: Option<u16>,
    ) -> Result<(), LinkError> {
        validate_ifname(name)?;
        let (v0, v1) = veth_names(name);
        if netns.is_some() {
            validate_ifname(&v0)?;
        }
        let vlan_link = match (uplink, vlan) {
            (Some(uplink), Some(id)) => {
                validate_ifname(uplink)?;
                if !(1..=4094).contains(&id) {
                    return Err(LinkError::Vlan(id));
                }
                let sub = format!("{uplink}.{id}");
                validate_ifname(&sub)?;
                Some((uplink.to_owned(), sub, id))
            }
            (Some(uplink), None) => {
                validate_ifname(uplink)?;
                None
            }
            (None, Some(id)) => return Err(LinkError::Vlan(id)),
            (None, None) => None,
        };
        let ns_file = match netns {
            Some(ns) => Some(File::open(netns_path(ns)?).map_err(|source| LinkError::Io {
                action: "open namespace",
                name: ns.to_owned(),
                source,
            })?),
            None => None,
        };

        let ns_fd = ns_file.as_ref().map(|f| f.as_raw_fd());
        let (v0, v1) = (&v0, &v1);
        Self::run(None, |handle| async move {
            let bridge = ensure_bridge_here(&handle, name).await?;
            if let Some((uplink, sub, id)) = &vlan_link {
                let parent = index_of(&handle, uplink).await?;
                set_up(&handle, parent, uplink, None).await?;
                if find(&handle, sub).await?.is_none() {
                    handle
                        .link()
                        .add(LinkVlan::new(sub, parent, *id).build())
                        .execute()
                        .await
                        .map_err(netlink("create VLAN link", sub))?;
                }
                let index = index_of(&handle, sub).await?;
                set_up(&handle, index, sub, Some(bridge)).await?;
            } else if let Some(uplink) = uplink {
                let index = index_of(&handle, uplink).await?;
                set_up(&handle, index, uplink, Some(bridge)).await?;
            }
            if let Some(fd) = ns_fd {
                if find(&handle, v0).await?.is_none() {
                    handle
                        .link()
                        .add(LinkVeth::new(v0, v1).build())
                        .execute()
                        .await
                        .map_err(netlink("create veth", v0))?;
                    let peer = index_of(&handle, v1).await?;
                    handle
                        .link()
                        .set(LinkUnspec::new_with_index(peer).setns_by_fd(fd).build())
                        .execute()
                        .await
                        .map_err(netlink("move into namespace", v1))?;
                }
                let index = index_of(&handle, v0).await?;
                set_up(&handle, index, v0, Some(bridge)).await?;
            }
            Ok(())
        })?;
        if let Some(ns) = netns {
            Self::run(Some(ns), |handle| async move {
                let bridge = ensure_bridge_here(&handle, name).await?;
                let index = index_of(&handle, v1).await?;
                set_up(&handle, index, v1, Some(bridge)).await
            })?;
        }
        drop(ns_file);
        Ok(())
    }

    fn delete_bridge(&self, name: &str, netns: Option<&str>) -> Result<(), LinkError> {
        validate_ifname(name)?;
        let (v0, _) = veth_names(name);
        if let Some(ns) = netns {
            Self::run(Some(ns), |handle| async move {
                delete_named(&handle, name).await.map(drop)
            })?;
        }
        Self::run(None, |handle| async move {
            // Deleting one veth end deletes its peer.
            delete_named(&handle, &v0).await?;
            delete_named(&handle, name).await.map(drop)
        })
    }

    fn create_tap(&self, name: &str, mac: MacAddr, bridge: &str) -> Result<(), LinkError> {
        validate_ifname(name)?;
        validate_ifname(bridge)?;
        let existing = Self::run(None, |handle| async move { find(&handle, name).await })?;
        match existing {
            Some(link) if kind(&link) == Some(&InfoKind::Tun) => {}
            Some(_) => {
                return Err(LinkError::WrongKind {
                    name: name.to_owned(),
                    expected: "tap",
                })
            }
            None => create_persistent_tap(name)?,
        }
        Self::run(None, |handle| async move {
            let bridge = index_of(&handle, bridge).await?;
            let index = index_of(&handle, name).await?;
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .address(mac.octets().to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(netlink("set MAC of", name))?;
            set_up(&handle, index, name, Some(bridge)).await
        })
    }

    fn delete_tap(&self, name: &str) -> Result<bool, LinkError> {
        validate_ifname(name)?;
        Self::run(None, |handle| async move {
            match find(&handle, name).await? {
                Some(link) if kind(&link) != Some(&InfoKind::Tun) => Err(LinkError::WrongKind {
                    name: name.to_owned(),
                    expected: "tap",
                }),
                Some(_) => delete_named(&handle, name).await,
                None => Ok(false),
            }
        })
    }

    fn list_taps(&self, prefix: &str) -> Result<Vec<String>, LinkError> {
        let mut names = Self::run(None, |handle| async move {
            let mut names = Vec::new();
            let mut links = handle.link().get().execute();
            while let Some(link) = links
                .try_next()
                .await
                .map_err(netlink("list links", "taps"))?
            {
                if kind(&link) == Some(&InfoKind::Tun) {
                    if let Some(name) = link_name(&link).filter(|n| n.starts_with(prefix)) {
                        names.push(name.to_owned());
                    }
                }
            }
            Ok(names)
        })?;
        names.sort();
        Ok(names)
    }
}

/// One call made to a [`FakeLinks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkCall {
    EnsureBridge {
        name: String,
        netns: Option<String>,
        uplink: Option<String>,
        vlan: Option<u16>,
    },
    DeleteBridge {
        name: String,
        netns: Option<String>,
    },
    CreateTap {
        name: String,
        mac: MacAddr,
        bridge: String,
    },
    DeleteTap(String),
    ListTaps(String),
}

#[derive(Debug, Default)]
struct FakeLinksState {
    calls: Vec<LinkCall>,
    bridges: Vec<String>,
    taps: Vec<String>,
    fail_on: Option<&'static str>,
}

/// [`Links`] in memory: records every call, keeps the taps and bridges it "made", and can
/// be told to fail one kind of call.
#[derive(Debug, Default)]
pub struct FakeLinks {
    state: Mutex<FakeLinksState>,
}

impl FakeLinks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call of the named operation (`"ensure_bridge"`, `"create_tap"`,
    /// `"delete_tap"`, ...) fail.
    pub fn fail_on(&self, operation: &'static str) {
        self.state.lock().unwrap().fail_on = Some(operation);
    }

    pub fn calls(&self) -> Vec<LinkCall> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn taps(&self) -> Vec<String> {
        self.state.lock().unwrap().taps.clone()
    }

    fn record(&self, operation: &'static str, call: LinkCall) -> Result<(), LinkError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(call);
        if state.fail_on == Some(operation) {
            return Err(LinkError::Injected(operation.to_owned()));
        }
        Ok(())
    }
}

impl Links for FakeLinks {
    fn ensure_bridge(
        &self,
        name: &str,
        netns: Option<&str>,
        uplink: Option<&str>,
        vlan: Option<u16>,
    ) -> Result<(), LinkError> {
        validate_ifname(name)?;
        self.record(
            "ensure_bridge",
            LinkCall::EnsureBridge {
                name: name.to_owned(),
                netns: netns.map(str::to_owned),
                uplink: uplink.map(str::to_owned),
                vlan,
            },
        )?;
        let mut state = self.state.lock().unwrap();
        if !state.bridges.iter().any(|b| b == name) {
            state.bridges.push(name.to_owned());
        }
        Ok(())
    }

    fn delete_bridge(&self, name: &str, netns: Option<&str>) -> Result<(), LinkError> {
        self.record(
            "delete_bridge",
            LinkCall::DeleteBridge {
                name: name.to_owned(),
                netns: netns.map(str::to_owned),
            },
        )?;
        self.state.lock().unwrap().bridges.retain(|b| b != name);
        Ok(())
    }

    fn create_tap(&self, name: &str, mac: MacAddr, bridge: &str) -> Result<(), LinkError> {
        validate_ifname(name)?;
        self.record(
            "create_tap",
            LinkCall::CreateTap {
                name: name.to_owned(),
                mac,
                bridge: bridge.to_owned(),
            },
        )?;
        let mut state = self.state.lock().unwrap();
        if !state.bridges.iter().any(|b| b == bridge) {
            return Err(LinkError::NotFound(bridge.to_owned()));
        }
        if !state.taps.iter().any(|t| t == name) {
            state.taps.push(name.to_owned());
        }
        Ok(())
    }

    fn delete_tap(&self, name: &str) -> Result<bool, LinkError> {
        self.record("delete_tap", LinkCall::DeleteTap(name.to_owned()))?;
        let mut state = self.state.lock().unwrap();
        let before = state.taps.len();
        state.taps.retain(|t| t != name);
        Ok(state.taps.len() != before)
    }

    fn list_taps(&self, prefix: &str) -> Result<Vec<String>, LinkError> {
        self.record("list_taps", LinkCall::ListTaps(prefix.to_owned()))?;
        let mut taps: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .taps
            .iter()
            .filter(|t| t.starts_with(prefix))
            .cloned()
            .collect();
        taps.sort();
        Ok(taps)
    }
}
