//! The Marketplace end to end: metadata built and signed with the `stratus` CLI, uploaded,
//! listed, checked by the site policy and run by its identifier; bad signatures, unknown
//! endorsers, expired entries and deny-listed checksums refused with the reason; deprecation.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use stratus_common::api::InstanceState;
use stratus_e2e::pki::TestPki;
use stratus_e2e::{appliance, TestCloud, TEST_ROOT};

const BOOT: Duration = Duration::from_secs(120);

fn pki(name: &str) -> (TestPki, std::path::PathBuf) {
    let dir = Path::new(TEST_ROOT).join(format!("pki-{name}-{}", std::process::id()));
    (TestPki::new(&dir).unwrap(), dir)
}

fn trust_config(pki: &TestPki, policy: &str) -> String {
    format!(
        "[marketplace]\ntrusted_ca_file = \"{}\"\n[marketplace.policy]\n{policy}\n",
        pki.ca_file.display()
    )
}

fn upload(cloud: &TestCloud, user: &str, signed: &Path) -> (u16, Value) {
    let body = std::fs::read_to_string(signed).unwrap();
    let (status, value) = cloud.post_raw(user, "/images", &body).unwrap();
    (status.as_u16(), value)
}

#[test]
fn a_signed_image_is_uploaded_listed_and_runs_by_its_identifier() {
    let (pki, pki_dir) = pki("run");
    let mut cloud = TestCloud::start_with("marketplace-run", &trust_config(&pki, "")).unwrap();
    cloud.start_agent().unwrap();
    cloud.create_user("alice").unwrap();
    let a = appliance().unwrap();
    let jane = pki.endorser("jane@example.org").unwrap();
    let signed = cloud
        .sign_appliance(&a, &jane, "appliance", |_| {})
        .unwrap();

    let (status, entry) = upload(&cloud, "alice", &signed);
    assert_eq!(status, 201, "{entry}");
    let identifier = entry["identifier"].as_str().unwrap().to_owned();
    assert_eq!(identifier.len(), 27, "StratusLab-style identifier");
    assert_eq!(entry["endorser_email"], "jane@example.org");
    assert_eq!(entry["trusted_by"], "ca");
    assert_eq!(entry["metadata"]["checksums"]["sha256"], a.sha256.as_str());

    let (_, list) = cloud
        .get("alice", &format!("/images?identifier={identifier}"))
        .unwrap();
    assert_eq!(list["marketplace"]["total"], 1, "{list}");
    let (_, verdict) = cloud
        .get("alice", &format!("/images/{identifier}/policy"))
        .unwrap();
    assert_eq!(verdict["allowed"], true, "{verdict}");

    let vm = cloud
        .run_instance("alice", json!({"image": identifier, "type": "t1.micro"}))
        .unwrap();
    cloud
        .wait_state("alice", vm.id, InstanceState::Running, BOOT)
        .unwrap();
    let banner = cloud.wait_banner(vm.id, BOOT).unwrap();
    assert!(banner.contains("disk=ok"), "{banner}");
    cloud
        .delete("alice", &format!("/instances/{}", vm.id))
        .unwrap();
    cloud
        .wait_state("alice", vm.id, InstanceState::Done, BOOT)
        .unwrap();
    let _ = std::fs::remove_dir_all(pki_dir);
}

#[test]
fn bad_signatures_unknown_endorsers_expired_and_denied_entries_are_refused_with_the_reason() {
    let (pki, pki_dir) = pki("refuse");
    // A small image the site has deny-listed by checksum.
    let denied_file = pki_dir.join("denied.raw");
    std::fs::write(&denied_file, vec![0x5a; 1 << 16]).unwrap();
    let denied_sha = stratus_e2e::sha256_file(&denied_file).unwrap();
    let cloud = TestCloud::start_with(
        "marketplace-refuse",
        &trust_config(&pki, &format!("checksum_deny = [\"{denied_sha}\"]")),
    )
    .unwrap();
    cloud.create_user("alice").unwrap();
    let a = appliance().unwrap();
    let jane = pki.endorser("jane@example.org").unwrap();
    let listed = |cloud: &TestCloud| {
        cloud.get("alice", "/images?history=true").unwrap().1["marketplace"]["total"].clone()
    };

    // A bad signature: one byte of the signature changed.
    let signed = cloud.sign_appliance(&a, &jane, "good", |_| {}).unwrap();
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    let signature = envelope["signature"].as_str().unwrap().to_owned();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    envelope["signature"] = json!(format!("{flipped}{}", &signature[1..]));
    let tampered = pki_dir.join("tampered.json");
    std::fs::write(&tampered, envelope.to_string()).unwrap();
    let (status, body) = upload(&cloud, "alice", &tampered);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("bad_signature")),
        "{body}"
    );
    assert_eq!(body["message"], "signature does not verify");

    // An endorser the site does not know, then the same once an admin registers it.
    let stranger = pki.self_signed("stranger@example.org").unwrap();
    let signed_by_stranger = cloud
        .sign_appliance(&a, &stranger, "stranger", |_| {})
        .unwrap();
    let (status, body) = upload(&cloud, "alice", &signed_by_stranger);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("untrusted_signer")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not issued by a trusted CA"),
        "{body}"
    );
    let certificate = std::fs::read_to_string(&stranger.cert).unwrap();
    let (status, body) = cloud
        .post("alice", "/endorsers", &json!({"certificate": certificate}))
        .unwrap();
    assert_eq!(status, 403, "only an admin registers endorsers: {body}");
    let (status, body) = cloud
        .post("admin", "/endorsers", &json!({"certificate": certificate}))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["emails"], json!(["stranger@example.org"]));
    let (status, body) = upload(&cloud, "alice", &signed_by_stranger);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["trusted_by"], "endorser");

    // An expired entry (signed in-process: the CLI refuses to sign one).
    let mut metadata: Value =
        serde_json::from_slice(&std::fs::read(cloud.dir.join("good.json")).unwrap()).unwrap();
    metadata["created"] = json!("2024-01-01T00:00:00Z");
    metadata["valid_until"] = json!("2024-06-01T00:00:00Z");
    metadata["endorser"]["subject"] = entry_subject(&cloud, &jane, &a);
    let expired = pki_dir.join("expired.json");
    std::fs::write(&expired, jane.sign(&metadata).unwrap()).unwrap();
    let (status, body) = upload(&cloud, "alice", &expired);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("entry_expired")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("2024-06-01"),
        "{body}"
    );

    // A deny-listed checksum.
    let denied = cloud
        .sign_appliance(&a, &jane, "denied", |m| {
            let identifier =
                stratus_common::marketplace::identifier_from_sha256(&denied_sha).unwrap();
            m["identifier"] = json!(identifier);
            m["checksums"] = json!({"sha256": denied_sha});
            m["size"] = json!(1 << 16);
            m["format"] = json!("raw");
            m["compression"] = json!("none");
            m["locations"] = json!([format!("file://{}", denied_file.display())]);
        })
        .unwrap();
    let (status, body) = upload(&cloud, "alice", &denied);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("image_denied")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("deny-listed"),
        "{body}"
    );

    // Malformed envelopes are 400s.
    let (status, body) = cloud
        .post_raw("alice", "/images", "{\"payload\": 1, \"signature\": 2}")
        .unwrap();
    assert_eq!(status, 400, "{body}");
    // Only the stranger's entry got in.
    assert_eq!(listed(&cloud), 1);
    let _ = std::fs::remove_dir_all(pki_dir);
}

/// The endorser subject the CLI wrote into a signed entry (the certificate's RFC 4514 subject).
fn entry_subject(
    cloud: &TestCloud,
    signer: &stratus_e2e::pki::Signer,
    a: &stratus_e2e::Appliance,
) -> Value {
    let signed = cloud
        .sign_appliance(a, signer, "subject-probe", |_| {})
        .unwrap();
    let envelope: stratus_common::marketplace::SignedMetadata =
        serde_json::from_slice(&std::fs::read(signed).unwrap()).unwrap();
    json!(envelope.metadata().unwrap().endorser.subject)
}

#[test]
fn a_deprecated_image_is_refused_before_it_starts_and_its_history_stays() {
    let (pki, pki_dir) = pki("deprecate");
    let mut cloud =
        TestCloud::start_with("marketplace-deprecate", &trust_config(&pki, "")).unwrap();
    cloud.start_agent().unwrap();
    let a = appliance().unwrap();
    let jane = pki.endorser("jane@example.org").unwrap();
    let first = cloud.sign_appliance(&a, &jane, "v1", |_| {}).unwrap();
    let (status, entry) = upload(&cloud, "admin", &first);
    assert_eq!(status, 201, "{entry}");
    let identifier = entry["identifier"].as_str().unwrap().to_owned();
    let created = entry["metadata"]["created"].as_str().unwrap().to_owned();
    // A later entry by the same endorser deprecating it (a minute later, within clock skew).
    let later = stratus_common::marketplace::format_timestamp(
        stratus_common::marketplace::parse_timestamp("created", &created).unwrap() + 60_000,
    );
    let deprecation = cloud
        .sign_appliance(&a, &jane, "v1-deprecated", |m| {
            m["created"] = json!(later);
            m["deprecated"] = json!("replaced by v2: security fix");
        })
        .unwrap();
    let (status, body) = upload(&cloud, "admin", &deprecation);
    assert_eq!(status, 201, "{body}");

    let (_, verdict) = cloud
        .get("admin", &format!("/images/{identifier}/policy"))
        .unwrap();
    assert_eq!(verdict["allowed"], false, "{verdict}");
    assert_eq!(verdict["code"], "image_deprecated");
    let (status, body) = cloud
        .post("admin", "/instances", &json!({"image": identifier}))
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("replaced by v2: security fix"),
        "{body}"
    );
    assert_eq!(
        cloud.get("admin", "/instances").unwrap().1,
        json!([]),
        "nothing was created"
    );
    assert!(cloud.domains().is_empty());

    // Entries are never deleted: the latest per endorser by default, all with history.
    let (_, latest) = cloud
        .get("admin", &format!("/images?identifier={identifier}"))
        .unwrap();
    assert_eq!(latest["marketplace"]["total"], 1);
    assert_eq!(
        latest["marketplace"]["items"][0]["metadata"]["deprecated"],
        "replaced by v2: security fix"
    );
    let (_, history) = cloud
        .get(
            "admin",
            &format!("/images?identifier={identifier}&history=true"),
        )
        .unwrap();
    assert_eq!(history["marketplace"]["total"], 2);
    let _ = std::fs::remove_dir_all(pki_dir);
}
