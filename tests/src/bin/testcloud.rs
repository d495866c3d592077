//! `stratus-testcloud`: a whole test cloud for test suites in other languages (the Libcloud
//! driver's live pytest suite). It starts a controller and an agent as real processes on a
//! site network whose bridge lives in a network namespace it makes (`public`, with its
//! gateway there) and a volume pool, registers the test appliance as `appliance` (a site
//! image) and uploads it signed to the Marketplace (endorsed by `jane@example.org` under a
//! test CA the site trusts), creates the user `alice`,
//! prints one JSON line saying where everything is, then waits: when its standard input
//! closes (the suite is done, or died) it stops the processes by pid, destroys the cloud's
//! domains and removes the namespace, the bridge and the files.

use std::io::Read;

use serde_json::json;
use stratus_e2e::appliance;
use stratus_e2e::netlab::NetLab;
use stratus_e2e::pki::TestPki;

fn main() -> anyhow::Result<()> {
    let lab = NetLab::new(7, 24);
    let pki_dir = std::path::Path::new(stratus_e2e::TEST_ROOT)
        .join(format!("testcloud-pki-{}", std::process::id()));
    let pki = TestPki::new(&pki_dir)?;
    let cloud = lab.cloud_with(
        "testcloud",
        &format!(
            "[marketplace]\ntrusted_ca_file = \"{}\"\n",
            pki.ca_file.display()
        ),
        &[
            ("volume_pool", "\"{dir}/agent/volumes\""),
            ("nbd_listen", "\"127.0.0.1\""),
        ],
    );
    cloud.create_user("alice")?;
    let signed = cloud.sign_appliance(
        &appliance()?,
        &pki.endorser("jane@example.org")?,
        "appliance",
        |_| {},
    )?;
    let (status, entry) = cloud.post_raw("alice", "/images", &std::fs::read_to_string(&signed)?)?;
    anyhow::ensure!(
        status.as_u16() == 201,
        "Marketplace upload: {status} {entry}"
    );
    println!(
        "{}",
        json!({
            "endpoint": cloud.base(),
            "ca_certificate": cloud.ca_certificate(),
            "username": "alice",
            "password": "alice-password",
            "admin_password": cloud.admin_password,
            "netns": lab.netns,
            "gateway": format!("10.251.{}.1", lab.subnet),
            "dir": cloud.dir,
            "host": cloud.host_name,
            "marketplace_image": entry["identifier"],
        })
    );
    // Until the suite closes our standard input.
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    eprintln!("stratus-testcloud: tearing down");
    drop(cloud);
    drop(lab);
    let _ = std::fs::remove_dir_all(&pki_dir);
    Ok(())
}
