//! Build -> sign -> verify: `stratus-build-metadata` describes real image files (a raw file and a
//! gzip-compressed qcow2 made with qemu-img), `stratus-sign-metadata` signs the result with PEM
//! RSA and ECDSA keys and with PKCS#12 files, and the controller's Marketplace verifier accepts
//! every envelope against the test CA.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use stratus_common::api::{Compression, DiskFormat};
use stratus_common::marketplace::{parse_metadata, ImageMetadata, SignedMetadata};
use stratus_controller::marketplace::{verify, TrustStore, VerifiedEntry};

mod support;

const RSA_PKCS1: &str = include_str!("data/rsa-2048.pkcs1.pem");
const RSA_PKCS8: &str = include_str!("data/rsa-2048.pk8.pem");

/// A scratch HOME with the classic names linked to the binary and a test CA.
struct Home {
    home: support::Home,
    ca: Certificate,
    ca_key: KeyPair,
}

impl Home {
    fn new() -> Self {
        let home = support::Home::new(&["build-metadata", "sign-metadata"]);
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "EU");
        params
            .distinguished_name
            .push(DnType::CommonName, "CLI Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2045, 1, 1);
        let ca = params.self_signed(&ca_key).unwrap();
        Self { home, ca, ca_key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path(name)
    }

    /// A certificate for `key`, issued by the test CA to Jane.
    fn certify(&self, key: &KeyPair) -> Certificate {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "EU");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(DnType::CommonName, "Jane Doe");
        params.subject_alt_names =
            vec![SanType::Rfc822Name("jane@example.org".try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::EmailProtection,
        ];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2045, 1, 1);
        params.signed_by(key, &self.ca, &self.ca_key).unwrap()
    }

    fn run(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.home.run(name, args, env)
    }

    fn trust(&self) -> TrustStore {
        TrustStore::from_pem(&self.ca.pem(), "").unwrap()
    }
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn sha256_hex(bytes: &[u8]) -> String {
    stratus_common::hex::encode(Sha256::digest(bytes))
}

fn build(home: &Home, image: &Path, output: &str) -> ImageMetadata {
    let stdout = ok(&home.run(
        "build-metadata",
        &[
            image.to_str().unwrap(),
            "--os",
            "ttylinux",
            "--os-version",
            "9.3",
            "--version",
            "1.0",
            "--description",
            "CLI test image",
            "--location",
            "http://127.0.0.1:8080/image",
            "-o",
            home.path(output).to_str().unwrap(),
        ],
        &[],
    ));
    let metadata = parse_metadata(&fs::read(home.path(output)).unwrap()).unwrap();
    assert_eq!(
        stdout,
        format!(
            " :: Metadata for image {} written to {}\n",
            metadata.identifier,
            home.path(output).display()
        )
    );
    metadata
}

fn verified(home: &Home, signed_path: &Path) -> VerifiedEntry {
    let envelope = SignedMetadata::from_json(&fs::read(signed_path).unwrap()).unwrap();
    verify(&envelope, &home.trust(), now_ms()).unwrap_or_else(|e| panic!("verify: {e}"))
}

#[test]
fn raw_image_signed_with_pem_rsa_and_ecdsa_keys_verifies() {
    let home = Home::new();
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(home.path("disk.img"), &image).unwrap();
    let metadata = build(&home, &home.path("disk.img"), "meta.json");
    assert_eq!(metadata.format, DiskFormat::Raw);
    assert_eq!(metadata.compression, Compression::None);
    assert_eq!(metadata.size, image.len() as u64);
    assert_eq!(metadata.checksums.sha256, sha256_hex(&image));

    // RSA, PKCS#1 key, on the command line.
    let rsa_cert = home.certify(&KeyPair::from_pem(RSA_PKCS8).unwrap());
    fs::write(home.path("rsa-cert.pem"), rsa_cert.pem()).unwrap();
    fs::write(home.path("rsa-key.pem"), RSA_PKCS1).unwrap();
    let stdout = ok(&home.run(
        "sign-metadata",
        &[
            home.path("meta.json").to_str().unwrap(),
            "--pem-cert",
            home.path("rsa-cert.pem").to_str().unwrap(),
            "--pem-key",
            home.path("rsa-key.pem").to_str().unwrap(),
            "-o",
            home.path("signed-rsa.json").to_str().unwrap(),
        ],
        &[],
    ));
    assert!(stdout.contains("signed as jane@example.org"), "{stdout}");
    let entry = verified(&home, &home.path("signed-rsa.json"));
    assert_eq!(entry.endorser_email, "jane@example.org");
    assert_eq!(entry.endorser_subject, "CN=Jane Doe,O=Example\\, Inc.,C=EU");
    assert_eq!(entry.metadata.checksums, metadata.checksums);

    // ECDSA P-256, PKCS#8 key with the CA after the certificate, from the environment; the
    // envelope goes to standard output.
    let ec_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_cert = home.certify(&ec_key);
    fs::write(home.path("ec-cert.pem"), ec_cert.pem() + &home.ca.pem()).unwrap();
    fs::write(home.path("ec-key.pem"), ec_key.serialize_pem()).unwrap();
    let stdout = ok(&home.run(
        "sign-metadata",
        &[home.path("meta.json").to_str().unwrap()],
        &[
            (
                "STRATUSLAB_PEM_CERTIFICATE",
                home.path("ec-cert.pem").to_str().unwrap(),
            ),
            (
                "STRATUSLAB_PEM_KEY",
                home.path("ec-key.pem").to_str().unwrap(),
            ),
        ],
    ));
    fs::write(home.path("signed-ec.json"), stdout).unwrap();
    let entry = verified(&home, &home.path("signed-ec.json"));
    assert_eq!(entry.metadata.identifier, metadata.identifier);
    let header = SignedMetadata::from_json(&fs::read(home.path("signed-ec.json")).unwrap())
        .unwrap()
        .header()
        .unwrap();
    assert_eq!(header.x5c.len(), 1, "the self-signed root is left out");
}

#[test]
fn gzip_compressed_qcow2_signed_with_pkcs12_verifies() {
    let home = Home::new();
    let qcow2 = home.path("disk.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow2)
        .arg("16M")
        .status()
        .expect("qemu-img is installed");
    assert!(status.success());
    let plain = fs::read(&qcow2).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    fs::write(home.path("disk.qcow2.gz"), gz.finish().unwrap()).unwrap();

    let metadata = build(&home, &home.path("disk.qcow2.gz"), "meta.json");
    assert_eq!(metadata.format, DiskFormat::Qcow2);
    assert_eq!(metadata.compression, Compression::Gzip);
    assert_eq!(metadata.size, plain.len() as u64);
    assert_eq!(metadata.checksums.sha256, sha256_hex(&plain));

    // A PKCS#12 file made with the p12-keystore crate, named in the configuration file.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = home.certify(&key);
    let chain = p12_keystore::PrivateKeyChain::new(
        b"jane".to_vec(),
        p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
        [p12_keystore::Certificate::from_der(cert.der()).unwrap()],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry("jane", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    fs::write(
        home.path("usercert.p12"),
        store.writer("s3cret").write().unwrap(),
    )
    .unwrap();
    fs::create_dir_all(home.path(".stratuslab")).unwrap();
    fs::write(
        home.path(".stratuslab/stratuslab-user.cfg"),
        format!(
            "[default]\np12_certificate = {}\np12_password = s3cret\n",
            home.path("usercert.p12").display()
        ),
    )
    .unwrap();
    ok(&home.run(
        "sign-metadata",
        &[
            home.path("meta.json").to_str().unwrap(),
            "-o",
            home.path("signed.json").to_str().unwrap(),
        ],
        &[],
    ));
    let entry = verified(&home, &home.path("signed.json"));
    assert_eq!(entry.metadata.format, DiskFormat::Qcow2);

    // A wrong password is an error naming the file.
    let out = home.run(
        "sign-metadata",
        &[
            home.path("meta.json").to_str().unwrap(),
            "--p12-password",
            "nope",
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("[ERROR] "), "{stderr}");
    assert!(
        stderr.contains("usercert.p12: cannot open the PKCS#12 file"),
        "{stderr}"
    );
}

/// OpenSSL 3's PKCS#12 defaults (PBES2, AES-256-CBC, HMAC-SHA-256), with an RSA key: the file
/// grid users export from their browsers or make with `openssl pkcs12 -export`.
#[test]
fn openssl_made_pkcs12_in_the_default_place_signs() {
    let home = Home::new();
    let key = KeyPair::from_pem(RSA_PKCS8).unwrap();
    let cert = home.certify(&key);
    fs::write(home.path("cert.pem"), cert.pem()).unwrap();
    fs::write(home.path("key.pem"), RSA_PKCS8).unwrap();
    fs::create_dir_all(home.path(".globus")).unwrap();
    let made = Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:pw", "-in"])
        .arg(home.path("cert.pem"))
        .arg("-inkey")
        .arg(home.path("key.pem"))
        .arg("-out")
        .arg(home.path(".globus/usercert.p12"))
        .status()
        .expect("run openssl (scripts/install-deps.sh installs it)");
    assert!(made.success());

    fs::write(home.path("disk.img"), vec![7u8; 65_536]).unwrap();
    build(&home, &home.path("disk.img"), "meta.json");
    ok(&home.run(
        "sign-metadata",
        &[
            home.path("meta.json").to_str().unwrap(),
            "-o",
            home.path("signed.json").to_str().unwrap(),
        ],
        &[("STRATUSLAB_P12_PASSWORD", "pw")],
    ));
    assert_eq!(
        verified(&home, &home.path("signed.json")).endorser_email,
        "jane@example.org"
    );
}

#[test]
fn invalid_metadata_is_not_signed() {
    let home = Home::new();
    fs::write(home.path("disk.img"), b"a tiny raw disk").unwrap();
    build(&home, &home.path("disk.img"), "meta.json");
    let mut value: serde_json::Value =
        serde_json::from_slice(&fs::read(home.path("meta.json")).unwrap()).unwrap();
    value["locations"] = serde_json::json!(["ftp://example.org/disk.img"]);
    fs::write(home.path("bad.json"), value.to_string()).unwrap();

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    fs::write(home.path("cert.pem"), home.certify(&key).pem()).unwrap();
    fs::write(home.path("key.pem"), key.serialize_pem()).unwrap();
    let out = home.run(
        "sign-metadata",
        &[
            home.path("bad.json").to_str().unwrap(),
            "--pem-cert",
            home.path("cert.pem").to_str().unwrap(),
            "--pem-key",
            home.path("key.pem").to_str().unwrap(),
            "-o",
            home.path("signed.json").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json: not signed: locations: "),
        "{stderr}"
    );
    assert!(!home.path("signed.json").exists());

    // An image in a format hosts cannot use is refused at build time.
    fs::write(
        home.path("disk.vmdk"),
        b"KDMV\x01\x00\x00\x00 sparse extent",
    )
    .unwrap();
    let out = home.run(
        "build-metadata",
        &[
            home.path("disk.vmdk").to_str().unwrap(),
            "--os",
            "x",
            "--os-version",
            "1",
            "--version",
            "1",
            "--description",
            "d",
            "--location",
            "http://127.0.0.1/x",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the image is vmdk"));
}
