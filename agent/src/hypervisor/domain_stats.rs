//! Every running domain's counters in one libvirt call (`virConnectGetAllDomainStats`, as the
//! libvirt Prometheus exporters read them), instead of five or more calls per domain and its
//! live XML: a scrape then costs one round trip to libvirtd, which asks each QEMU itself.
//!
//! libvirt answers typed parameters named as `virsh domstats` prints them (`cpu.time`,
//! `balloon.rss`, `block.0.name`, `net.1.rx.bytes`, ...); [`guest_stats`] turns one domain's
//! into [`GuestStats`], and is unit-tested on its own. The FFI call and the walk over the
//! records ([`all`]) are exercised against a real libvirt by the metrics tests.

use std::collections::BTreeMap;
use std::ffi::CStr;

use virt::connect::Connect;
use virt::sys;

use super::{BlockStats, GuestStats, InterfaceStats};

/// One typed parameter's value, as far as the counters need them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(u64),
    Text(String),
}

impl Value {
    fn number(&self) -> Option<u64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Text(_) => None,
        }
    }
}

/// The groups read: state, CPU, balloon (memory), vCPUs, interfaces and disks.
const GROUPS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

/// The counters of every running domain, by domain name.
pub fn all(conn: &Connect) -> Result<BTreeMap<String, GuestStats>, virt::error::Error> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is an open connection; libvirt fills `records` with a NULL-terminated
    // array it allocated, or returns -1 and leaves it alone.
    let count = unsafe {
        sys::virConnectGetAllDomainStats(
            conn.as_ptr(),
            GROUPS,
            &mut records,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
        )
    };
    if count < 0 {
        return Err(virt::error::Error::last_error());
    }
    let mut all = BTreeMap::new();
    for k in 0..count as usize {
        // SAFETY: `records` holds `count` valid record pointers (then NULL); each record's
        // `params` holds `nparams` parameters, valid until the list is freed below, and a
        // string parameter's `s` is a NUL-terminated string libvirt owns.
        let (name, params) = unsafe {
            let record = &**records.add(k);
            let name = sys::virDomainGetName(record.dom);
            if name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(name).to_string_lossy().into_owned();
            let params = std::slice::from_raw_parts(record.params, record.nparams.max(0) as usize)
                .iter()
                .filter_map(|p| {
                    let field = CStr::from_ptr(p.field.as_ptr())
                        .to_string_lossy()
                        .into_owned();
                    let value = match p.type_ as u32 {
                        sys::VIR_TYPED_PARAM_INT => Value::Number(p.value.i.max(0) as u64),
                        sys::VIR_TYPED_PARAM_UINT => Value::Number(u64::from(p.value.ui)),
                        sys::VIR_TYPED_PARAM_LLONG => Value::Number(p.value.l.max(0) as u64),
                        sys::VIR_TYPED_PARAM_ULLONG => Value::Number(p.value.ul),
                        sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                            Value::Text(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                        }
                        _ => return None,
                    };
                    Some((field, value))
                })
                .collect::<BTreeMap<String, Value>>();
            (name, params)
        };
        all.insert(name, guest_stats(&params));
    }
    // SAFETY: `records` came from virConnectGetAllDomainStats and is freed once, here.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(all)
}

/// One domain's counters from its typed parameters. libvirt leaves out what it cannot tell
/// (a guest without a balloon driver has no `balloon.usable`), and so does this.
pub fn guest_stats(params: &BTreeMap<String, Value>) -> GuestStats {
    let number = |key: &str| params.get(key).and_then(Value::number);
    let text = |key: &str| match params.get(key) {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let kib = |key: &str| number(key).map(|k| k.saturating_mul(1024));
    let disks = (0..number("block.count").unwrap_or(0))
        .filter_map(|n| {
            let at = |what: &str| number(&format!("block.{n}.{what}")).unwrap_or(0);
            Some(BlockStats {
                device: text(&format!("block.{n}.name"))?,
                read_bytes: at("rd.bytes"),
                written_bytes: at("wr.bytes"),
                reads: at("rd.reqs"),
                writes: at("wr.reqs"),
            })
        })
        .collect();
    let interfaces = (0..number("net.count").unwrap_or(0))
        .filter_map(|n| {
            let at = |what: &str| number(&format!("net.{n}.{what}")).unwrap_or(0);
            Some(InterfaceStats {
                interface: text(&format!("net.{n}.name"))?,
                receive_bytes: at("rx.bytes"),
                transmit_bytes: at("tx.bytes"),
                receive_packets: at("rx.pkts"),
                transmit_packets: at("tx.pkts"),
                receive_errors: at("rx.errs"),
                transmit_errors: at("tx.errs"),
                receive_drops: at("rx.drop"),
                transmit_drops: at("tx.drop"),
            })
        })
        .collect();
    GuestStats {
        cpu_ns: number("cpu.time").unwrap_or(0),
        vcpus: number("vcpu.current").unwrap_or(0) as u32,
        memory_bytes: kib("balloon.current").unwrap_or(0),
        rss_bytes: kib("balloon.rss"),
        usable_bytes: kib("balloon.usable"),
        disks,
        interfaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn a_domains_parameters_become_its_counters() {
        use Value::{Number as N, Text as T};
        let stats = guest_stats(&params(&[
            ("state.state", N(1)),
            ("cpu.time", N(2_500_000_000)),
            ("vcpu.current", N(2)),
            ("balloon.current", N(131_072)),
            ("balloon.rss", N(90_000)),
            ("block.count", N(2)),
            ("block.0.name", T("vda".into())),
            ("block.0.rd.bytes", N(4096)),
            ("block.0.rd.reqs", N(2)),
            ("block.0.wr.bytes", N(512)),
            ("block.0.wr.reqs", N(1)),
            ("block.1.name", T("hdc".into())),
            ("net.count", N(1)),
            ("net.0.name", T("vnet3".into())),
            ("net.0.rx.bytes", N(100)),
            ("net.0.rx.pkts", N(2)),
            ("net.0.tx.bytes", N(300)),
            ("net.0.tx.pkts", N(4)),
            ("net.0.tx.drop", N(1)),
        ]));
        assert_eq!(stats.cpu_ns, 2_500_000_000);
        assert_eq!(stats.vcpus, 2);
        assert_eq!(stats.memory_bytes, 128 << 20);
        assert_eq!(stats.rss_bytes, Some(90_000 * 1024));
        assert_eq!(stats.usable_bytes, None, "no balloon driver: not reported");
        assert_eq!(
            stats.disks,
            vec![
                BlockStats {
                    device: "vda".into(),
                    read_bytes: 4096,
                    written_bytes: 512,
                    reads: 2,
                    writes: 1,
                },
                BlockStats {
                    device: "hdc".into(),
                    ..BlockStats::default()
                },
            ]
        );
        assert_eq!(stats.interfaces.len(), 1);
        let tap = &stats.interfaces[0];
        assert_eq!(
            (
                tap.interface.as_str(),
                tap.receive_bytes,
                tap.transmit_packets,
                tap.transmit_drops
            ),
            ("vnet3", 100, 4, 1)
        );
        // A device whose name is missing is left out, not shown nameless.
        let nameless = guest_stats(&params(&[
            ("block.count", N(1)),
            ("block.0.rd.bytes", N(1)),
        ]));
        assert!(nameless.disks.is_empty());
    }
}
