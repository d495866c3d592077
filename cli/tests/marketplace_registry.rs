//! The Marketplace registry commands as a user runs them (`stratus-upload-metadata`,
//! `stratus-describe-images`, `stratus-policy-image`, `stratus-deprecate-metadata`, the endorser
//! commands): exact output, `[ERROR] ` lines, exit codes and the requests sent, against a canned
//! HTTP server on 127.0.0.1. The deprecation a user signs is checked with the controller's own
//! verifier.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use stratus_common::api::{
    Artifact, Compression, DiskFormat, Endorser, Image, ImageList, MarketplaceEntry,
    MarketplacePage, PolicyVerdict,
};
use stratus_common::marketplace::{
    identifier_from_sha256, parse_timestamp, Checksums, Endorser as MetadataEndorser, ImageKind,
    ImageMetadata, SignedMetadata,
};
use stratus_controller::marketplace::{verify, TrustStore};

mod support;

use support::{assert_unreachable, reply, stderr, stdout, unused_port, CannedServer, Home};

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

/// The body of a request the server saw.
fn body(request: &str) -> &str {
    request.split_once("\r\n\r\n").unwrap().1
}

const SHA256: &str = "1b7af784841125887e688254229e282829e17245d0e47fe7280da9b68a30d9e1";

fn identifier() -> String {
    identifier_from_sha256(SHA256).unwrap()
}

fn metadata(email: &str, subject: &str) -> ImageMetadata {
    ImageMetadata {
        identifier: identifier(),
        kind: ImageKind::Machine,
        format: DiskFormat::Qcow2,
        compression: Compression::Gzip,
        size: 196_616,
        checksums: Checksums {
            sha256: SHA256.into(),
            sha1: None,
            md5: None,
        },
        os: "ttylinux".into(),
        os_version: "9.3".into(),
        arch: "x86_64".into(),
        version: "1.0".into(),
        description: "ttylinux 9.3 test appliance".into(),
        locations: vec!["https://images.example.org/ttylinux-9.3.qcow2.gz".into()],
        endorser: MetadataEndorser {
            email: email.into(),
            subject: subject.into(),
        },
        created: "2026-01-21T22:45:37Z".into(),
        valid_until: "2040-11-21T22:45:37Z".into(),
        deprecated: None,
        kernel: None,
        initrd: None,
        cmdline: None,
    }
}

fn entry(seq: u64, metadata: ImageMetadata) -> MarketplaceEntry {
    MarketplaceEntry {
        seq,
        identifier: metadata.identifier.clone(),
        endorser_email: metadata.endorser.email.clone(),
        endorser_subject: metadata.endorser.subject.clone(),
        cert_sha256: "cd".repeat(32),
        trusted_by: "ca".into(),
        uploaded: "2026-01-21T22:46:00.000Z".into(),
        metadata,
    }
}

fn jane_entry(seq: u64) -> MarketplaceEntry {
    entry(seq, metadata("jane.doe@example.org", "CN=Jane Doe,C=FR"))
}

fn envelope(payload: &str) -> String {
    format!(r#"{{"protected":"eyJ9","payload":"{payload}","signature":"AAAA"}}"#)
}

/// The classic names these tests run the binary as.
const NAMES: &[&str] = &[
    "upload-metadata",
    "describe-images",
    "policy-image",
    "deprecate-metadata",
    "describe-endorsers",
    "register-endorser",
];

#[test]
fn upload_reports_each_file_and_fails_if_one_was_refused() {
    let accepted = jane_entry(12);
    let server = CannedServer::start(vec![
        reply("201 Created", &json(&accepted)),
        reply(
            "403 Forbidden",
            r#"{"code":"untrusted_signer","message":"certificate not issued by a trusted CA or registered endorser"}"#,
        ),
    ]);
    let home = Home::new(NAMES);
    let good = home.write("good.json", &envelope("Z29vZA"));
    let bad = home.write("bad.json", &envelope("YmFk"));
    let unsigned = home.write("unsigned.json", &json(&metadata("", "")));
    let missing = home.path("missing.json").display().to_string();
    // The Marketplace is the cloud endpoint when no marketplace_endpoint is configured.
    home.write_config(&format!(
        "[default]\nendpoint = {}\nusername = jane\npassword = pw\n",
        server.address
    ));
    let out = home.run("upload-metadata", &[&good, &unsigned, &bad, &missing], &[]);
    assert_eq!(
        stdout(&out),
        format!(
            "UPLOADED {} endorser jane.doe@example.org (entry 12)\n",
            identifier()
        )
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "[ERROR] {unsigned}: unsigned metadata: sign it with stratus-sign-metadata first, \
             then upload what it writes"
        )
    );
    assert_eq!(
        lines[1],
        format!("[ERROR] {bad}: certificate not issued by a trusted CA or registered endorser")
    );
    assert!(
        lines[2].starts_with(&format!("[ERROR] {missing}: cannot read it: ")),
        "{err}"
    );
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(out.status.code(), Some(1));

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        2,
        "the unsigned and missing files were not sent"
    );
    for (request, payload) in requests.iter().zip(["Z29vZA", "YmFk"]) {
        assert!(
            request.starts_with("POST /api/v1/images HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("content-type: application/json\r\n"),
            "{request}"
        );
        // jane:pw
        assert!(
            request.contains("authorization: Basic amFuZTpwdw==\r\n"),
            "{request}"
        );
        let sent = SignedMetadata::from_json(body(request).as_bytes()).unwrap();
        assert_eq!(sent.payload, payload);
    }
}

#[test]
fn upload_json_prints_the_entries_and_a_duplicate_is_an_error() {
    let server = CannedServer::start(vec![
        reply("201 Created", &json(&jane_entry(3))),
        reply(
            "409 Conflict",
            r#"{"code":"conflict","message":"duplicate of entry 3"}"#,
        ),
    ]);
    let home = Home::new(NAMES);
    let file = home.write("signed.json", &envelope("eA"));
    let out = home.run(
        "upload-metadata",
        &[&file, &file, "--json"],
        &[
            ("STRATUSLAB_ENDPOINT", "127.0.0.1:1"),
            ("STRATUSLAB_MARKETPLACE_ENDPOINT", &server.address),
        ],
    );
    let entries: Vec<MarketplaceEntry> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(entries, [jane_entry(3)]);
    assert_eq!(
        stderr(&out),
        format!("[ERROR] {file}: duplicate of entry 3\n")
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn upload_stops_at_an_unreachable_marketplace() {
    let port = unused_port();
    let home = Home::new(NAMES);
    let file = home.write("signed.json", &envelope("eA"));
    let out = home.run(
        "upload-metadata",
        &[
            &file,
            &file,
            "--marketplace-endpoint",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    assert_unreachable(&out, port);
}

#[test]
fn describe_images_lists_entries_site_images_and_the_page() {
    let mut deprecated = jane_entry(9);
    deprecated.metadata.deprecated = Some("security hole, use 9.4".into());
    deprecated.metadata.compression = Compression::None;
    deprecated.metadata.created = "2026-02-01T08:00:00Z".into();
    let list = ImageList {
        site: vec![Image {
            name: "debian-12".into(),
            format: DiskFormat::Raw,
            disk: Artifact {
                locations: vec!["file:///srv/images/debian-12.raw".into()],
                sha256: "ef".repeat(32),
                size: None,
                compression: Compression::None,
            },
            kernel: None,
            initrd: None,
            cmdline: None,
            owner: "admin".into(),
            created: "2024-05-01T10:00:00.000Z".into(),
        }],
        marketplace: MarketplacePage {
            items: vec![deprecated, jane_entry(4)],
            total: 7,
            offset: 0,
            limit: 2,
        },
    };
    let server = CannedServer::start(vec![
        reply("200 OK", &json(&list)),
        reply("200 OK", &json(&list)),
    ]);
    let home = Home::new(NAMES);
    let env = [("STRATUSLAB_ENDPOINT", server.address.as_str())];
    let out = home.run("describe-images", &["--limit", "2"], &env);
    assert_eq!(stderr(&out), "");
    let id = identifier();
    assert_eq!(
        stdout(&out),
        format!(
            "\
:: IMAGE {id}
    os: ttylinux 9.3 (x86_64)   kind: machine   format: qcow2   size: 196616
    version: 1.0   endorser: jane.doe@example.org   created: 2026/02/01 08:00:00   valid until: 2040/11/21 22:45:37
    description: ttylinux 9.3 test appliance
    deprecated: security hole, use 9.4
:: IMAGE {id}
    os: ttylinux 9.3 (x86_64)   kind: machine   format: qcow2 (gzip)   size: 196616
    version: 1.0   endorser: jane.doe@example.org   created: 2026/01/21 22:45:37   valid until: 2040/11/21 22:45:37
    description: ttylinux 9.3 test appliance
:: SITE IMAGE debian-12
    format: raw   owner: admin   created: 2024/05/01 10:00:00
(showing 1-2 of 7 Marketplace entries)
"
        )
    );
    assert!(out.status.success());

    // Filters go into the query; site images do not match a Marketplace-only filter.
    let out = home.run(
        "describe-images",
        &[
            "--endorser",
            "jane.doe@example.org",
            "--from",
            "2026-01-01T00:00:00Z",
            "--history",
            "--json",
        ],
        &env,
    );
    let shown: ImageList = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(shown.site.is_empty());
    assert_eq!(shown.marketplace, list.marketplace);
    let requests = server.requests();
    assert!(
        requests[0].starts_with("GET /api/v1/images?limit=2 HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(
        requests[1].starts_with(
            "GET /api/v1/images?endorser=jane.doe%40example.org&from=2026-01-01T00%3A00%3A00Z\
             &history=true HTTP/1.1\r\n"
        ),
        "{}",
        requests[1]
    );
}

#[test]
fn describe_images_refuses_a_bad_time_before_asking() {
    let home = Home::new(NAMES);
    let out = home.run(
        "describe-images",
        &["--to", "yesterday"],
        &[("STRATUSLAB_ENDPOINT", "127.0.0.1:1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not an RFC 3339 UTC time like 2024-05-01T10:00:00Z"),
        "{}",
        stderr(&out)
    );
}

fn verdict(allowed: bool) -> PolicyVerdict {
    if allowed {
        PolicyVerdict {
            identifier: identifier(),
            allowed: true,
            code: None,
            reason: None,
            entry: Some(jane_entry(12)),
        }
    } else {
        PolicyVerdict {
            identifier: "G3r3hIQRJYh-aIJUIp4oKCnhckU".into(),
            allowed: false,
            code: Some("deprecated".into()),
            reason: Some(
                "image G3r3hIQRJYh-aIJUIp4oKCnhckU is deprecated: security hole, use 9.4 \
                 (endorser jane.doe@example.org)"
                    .into(),
            ),
            entry: None,
        }
    }
}

#[test]
fn policy_exits_zero_only_if_every_image_is_allowed() {
    let server = CannedServer::start(vec![
        reply("200 OK", &json(&verdict(true))),
        reply("200 OK", &json(&verdict(false))),
        reply(
            "404 Not Found",
            r#"{"code":"not_found","message":"no Marketplace entry for image AAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        ),
        reply("200 OK", &json(&verdict(true))),
        reply("200 OK", &json(&verdict(false))),
    ]);
    let home = Home::new(NAMES);
    let env = [("STRATUSLAB_MARKETPLACE_ENDPOINT", server.address.as_str())];
    let id = identifier();
    let out = home.run(
        "policy-image",
        &[
            &id,
            "G3r3hIQRJYh-aIJUIp4oKCnhckU",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "not/an-id",
        ],
        &env,
    );
    assert_eq!(
        stdout(&out),
        format!(
            "ALLOWED {id} endorser jane.doe@example.org (entry 12)\n\
             REFUSED G3r3hIQRJYh-aIJUIp4oKCnhckU: image G3r3hIQRJYh-aIJUIp4oKCnhckU is \
             deprecated: security hole, use 9.4 (endorser jane.doe@example.org)\n"
        )
    );
    assert_eq!(
        stderr(&out),
        "[ERROR] no Marketplace entry for image AAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
         [ERROR] \"not/an-id\" is not a Marketplace image identifier (27 characters: letters, \
         digits, - and _)\n"
    );
    assert_eq!(out.status.code(), Some(1));

    let out = home.run("policy-image", &[&id], &env);
    assert_eq!(
        stdout(&out),
        format!("ALLOWED {id} endorser jane.doe@example.org (entry 12)\n")
    );
    assert_eq!(out.status.code(), Some(0));

    let out = home.run(
        "policy-image",
        &["G3r3hIQRJYh-aIJUIp4oKCnhckU", "--json"],
        &env,
    );
    let verdicts: Vec<PolicyVerdict> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(verdicts, [verdict(false)]);
    assert_eq!(out.status.code(), Some(1));

    let requests = server.requests();
    assert!(requests[0].starts_with(&format!("GET /api/v1/images/{id}/policy HTTP/1.1\r\n")));
    assert!(requests[2]
        .starts_with("GET /api/v1/images/AAAAAAAAAAAAAAAAAAAAAAAAAAA/policy HTTP/1.1\r\n"));
}

/// A test CA and Jane's certificate from it, written as PEM files in `home`.
struct Pki {
    ca: Certificate,
    cert: String,
    key: String,
}

fn pki(home: &Home) -> Pki {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Registry Test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2045, 1, 1);
    let ca = params.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "FR");
    params
        .distinguished_name
        .push(DnType::CommonName, "Jane Doe");
    params.subject_alt_names = vec![SanType::Rfc822Name(
        "jane.doe@example.org".try_into().unwrap(),
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2045, 1, 1);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        cert: home.write("usercert.pem", &cert.pem()),
        key: home.write("userkey.pem", &key.serialize_pem()),
        ca,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn deprecate_signs_and_uploads_a_deprecated_copy_of_your_latest_entry() {
    let home = Home::new(NAMES);
    let pki = pki(&home);
    let subject = "CN=Jane Doe,C=FR";
    let latest = entry(8, metadata("jane.doe@example.org", subject));
    let page = ImageList {
        site: Vec::new(),
        marketplace: MarketplacePage {
            items: vec![latest.clone()],
            total: 1,
            offset: 0,
            limit: 1,
        },
    };
    let mut uploaded = latest.clone();
    uploaded.seq = 13;
    uploaded.metadata.deprecated = Some("security hole, use 9.4".into());
    let server = CannedServer::start(vec![
        reply("200 OK", &json(&page)),
        reply("201 Created", &json(&uploaded)),
    ]);
    let id = identifier();
    let before = now_ms() / 1000 * 1000;
    let out = home.run(
        "deprecate-metadata",
        &[
            &id,
            "--reason",
            "security hole, use 9.4",
            "--pem-cert",
            &pki.cert,
            "--pem-key",
            &pki.key,
        ],
        &[("STRATUSLAB_MARKETPLACE_ENDPOINT", &server.address)],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), format!("DEPRECATED {id} (entry 13)\n"));
    assert!(out.status.success());

    let requests = server.requests();
    assert!(
        requests[0].starts_with(&format!(
            "GET /api/v1/images?identifier={id}&endorser=jane.doe%40example.org&limit=1 \
             HTTP/1.1\r\n"
        )),
        "{}",
        requests[0]
    );
    assert!(requests[1].starts_with("POST /api/v1/images HTTP/1.1\r\n"));
    let envelope = SignedMetadata::from_json(body(&requests[1]).as_bytes()).unwrap();
    let trust = TrustStore::from_pem(&pki.ca.pem(), "").unwrap();
    let verified = verify(&envelope, &trust, now_ms()).unwrap_or_else(|e| panic!("verify: {e}"));
    assert_eq!(verified.endorser_email, "jane.doe@example.org");
    assert_eq!(verified.endorser_subject, subject);
    let signed = verified.metadata;
    assert_eq!(signed.deprecated.as_deref(), Some("security hole, use 9.4"));
    let created = parse_timestamp("created", &signed.created).unwrap();
    assert!(
        created >= before && created <= now_ms(),
        "{}",
        signed.created
    );
    // Everything else is the entry's statement as it was.
    let mut unchanged = signed.clone();
    unchanged.deprecated = None;
    unchanged.created = latest.metadata.created.clone();
    assert_eq!(unchanged, latest.metadata);
}

#[test]
fn deprecate_needs_an_entry_of_yours() {
    let home = Home::new(NAMES);
    let pki = pki(&home);
    let empty = ImageList {
        site: Vec::new(),
        marketplace: MarketplacePage {
            items: Vec::new(),
            total: 0,
            offset: 0,
            limit: 1,
        },
    };
    let server = CannedServer::start(vec![reply("200 OK", &json(&empty))]);
    let id = identifier();
    let out = home.run(
        "deprecate-metadata",
        &[&id, "--reason", "gone"],
        &[
            ("STRATUSLAB_ENDPOINT", &server.address),
            ("STRATUSLAB_PEM_CERTIFICATE", &pki.cert),
            ("STRATUSLAB_PEM_KEY", &pki.key),
        ],
    );
    assert_eq!(
        stderr(&out),
        format!(
            "[ERROR] no Marketplace entry for image {id} endorsed by jane.doe@example.org: only \
             an image's endorsers can deprecate their entries\n"
        )
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.requests().len(), 1, "nothing was uploaded");
}

fn endorser() -> Endorser {
    Endorser {
        subject: "CN=Jane Doe,C=FR".into(),
        emails: vec!["jane.doe@example.org".into()],
        cert_sha256: "0f".repeat(32),
        not_after: "2045-01-01T00:00:00.000Z".into(),
        added: "2026-11-21T22:00:00.000Z".into(),
        added_by: "admin".into(),
    }
}

#[test]
fn endorsers_are_listed_and_registered_by_certificate_alone() {
    let server = CannedServer::start(vec![
        reply("200 OK", &json(&[endorser()])),
        reply("201 Created", &json(&endorser())),
        reply(
            "403 Forbidden",
            r#"{"code":"forbidden","message":"only an administrator may register endorsers"}"#,
        ),
    ]);
    let home = Home::new(NAMES);
    let pki = pki(&home);
    let env = [("STRATUSLAB_ENDPOINT", server.address.as_str())];
    let out = home.run("describe-endorsers", &[], &env);
    assert_eq!(
        stdout(&out),
        format!(
            ":: ENDORSER CN=Jane Doe,C=FR\n    emails: jane.doe@example.org   valid until: \
             2045/01/01 00:00:00\n    added: 2026/11/21 22:00:00 by admin\n    \
             certificate sha256: {}\n",
            "0f".repeat(32)
        )
    );
    assert!(out.status.success());

    // A file with the key after the certificate: only the certificate leaves.
    let cert_pem = fs::read_to_string(&pki.cert).unwrap();
    let both = home.write(
        "both.pem",
        &(cert_pem.clone() + &fs::read_to_string(&pki.key).unwrap()),
    );
    let out = home.run("register-endorser", &[&both], &env);
    assert_eq!(
        stdout(&out),
        format!(
            "REGISTERED endorser jane.doe@example.org (CN=Jane Doe,C=FR) certificate sha256 {}\n",
            "0f".repeat(32)
        )
    );
    assert!(out.status.success());
    let out = home.run("register-endorser", &[&pki.cert], &env);
    assert_eq!(
        stderr(&out),
        "[ERROR] only an administrator may register endorsers\n"
    );
    assert_eq!(out.status.code(), Some(1));

    let requests = server.requests();
    assert!(requests[0].starts_with("GET /api/v1/endorsers HTTP/1.1\r\n"));
    assert!(requests[1].starts_with("POST /api/v1/endorsers HTTP/1.1\r\n"));
    let sent: serde_json::Value = serde_json::from_str(body(&requests[1])).unwrap();
    assert_eq!(sent, serde_json::json!({ "certificate": cert_pem }));
    assert!(!body(&requests[1]).contains("PRIVATE KEY"));
}

#[test]
fn register_endorser_refuses_a_file_without_a_certificate() {
    let home = Home::new(NAMES);
    let pki = pki(&home);
    let out = home.run(
        "register-endorser",
        &[&pki.key],
        &[("STRATUSLAB_ENDPOINT", "127.0.0.1:1")],
    );
    assert_eq!(
        stderr(&out),
        format!(
            "[ERROR] {}: no PEM certificate in it (-----BEGIN CERTIFICATE----- ... \
             -----END CERTIFICATE-----)\n",
            Path::new(&pki.key).display()
        )
    );
    assert_eq!(out.status.code(), Some(1));
}
