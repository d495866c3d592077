//! Test fixtures: a small PKI made with rcgen (a CA, an intermediate, endorsers with RSA and
//! ECDSA keys, expired and host certificates), signing with `ring`, and metadata to sign.

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384,
};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use stratus_common::api::{Compression, DiskFormat};
use stratus_common::certificate::read_certificate;
use stratus_common::marketplace::{
    format_timestamp, identifier_from_sha256, Checksums, Endorser as MetadataEndorser, ImageKind,
    ImageMetadata, JwsAlgorithm, JwsHeader, SignedMetadata, UnsignedEnvelope,
};

use super::verify::{TrustPath, VerifiedEntry};

/// "Now" in the tests: 2025-01-01T00:00:00Z.
pub const NOW_MS: u64 = 1_735_689_600_000;
pub const DAY_MS: u64 = 86_400_000;

/// A test-only RSA key (rcgen with ring cannot generate RSA keys).
const RSA_KEY_PEM: &str = include_str!("testdata/rsa-2048.pem");

const OID_EMAIL_ADDRESS: [u64; 7] = [1, 2, 840, 113_549, 1, 9, 1];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    Rsa,
    P256,
    P384,
}

impl TestKey {
    fn generate(self) -> KeyPair {
        match self {
            Self::Rsa => KeyPair::from_pem(RSA_KEY_PEM).unwrap(),
            Self::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            Self::P384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap(),
        }
    }

    fn alg(self) -> JwsAlgorithm {
        match self {
            Self::Rsa => JwsAlgorithm::RS256,
            Self::P256 => JwsAlgorithm::ES256,
            Self::P384 => JwsAlgorithm::ES384,
        }
    }
}

/// A CA: its certificate and key.
pub struct Authority {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// An endorser: certificate, key, and which kind of key.
pub struct Endorser {
    pub cert: Certificate,
    key: KeyPair,
    kind: TestKey,
    pub email: String,
}

impl Endorser {
    /// The certificate's subject as the verifier reads it.
    pub fn subject(&self) -> String {
        read_certificate(self.cert.der()).unwrap().subject
    }

    /// Signs `message` as JWS wants it for this key's algorithm.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let pkcs8 = self.key.serialize_der();
        match self.kind {
            TestKey::Rsa => {
                let key = RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .unwrap();
                signature
            }
            TestKey::P256 | TestKey::P384 => {
                let alg = if self.kind == TestKey::P256 {
                    &ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let key = EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng).unwrap();
                key.sign(&rng, message).unwrap().as_ref().to_vec()
            }
        }
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "EU");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "StratusLab Test");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2040, 1, 1);
    params
}

fn endorser_params(email: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "EU");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "StratusLab Test");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "Endorsers");
    params
        .distinguished_name
        .push(DnType::CommonName, "Jane Doe");
    params.distinguished_name.push(
        DnType::CustomDnType(OID_EMAIL_ADDRESS.to_vec()),
        rcgen::DnValue::Ia5String("jane.doe@example.org".try_into().unwrap()),
    );
    params.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2030, 1, 1);
    params
}

/// A test PKI rooted in one CA.
pub struct Pki {
    pub ca: Authority,
}

impl Pki {
    pub fn new() -> Self {
        Self::with_ca_name("Test Grid CA")
    }

    pub fn with_ca_name(common_name: &str) -> Self {
        let key = TestKey::P256.generate();
        let cert = ca_params(common_name).self_signed(&key).unwrap();
        Self {
            ca: Authority { cert, key },
        }
    }

    /// An intermediate CA issued by the root.
    pub fn intermediate(&self) -> Authority {
        let key = TestKey::P256.generate();
        let cert = ca_params("Test Intermediate CA")
            .signed_by(&key, &self.ca.cert, &self.ca.key)
            .unwrap();
        Authority { cert, key }
    }

    fn issue(
        &self,
        kind: TestKey,
        email: &str,
        params: CertificateParams,
        by: &Authority,
    ) -> Endorser {
        let key = kind.generate();
        let cert = params.signed_by(&key, &by.cert, &by.key).unwrap();
        Endorser {
            cert,
            key,
            kind,
            email: email.into(),
        }
    }

    /// An endorser certificate issued by the root CA.
    pub fn endorser(&self, kind: TestKey, email: &str) -> Endorser {
        self.issue(kind, email, endorser_params(email), &self.ca)
    }

    /// An endorser certificate issued by `ca`.
    pub fn endorser_issued_by(&self, kind: TestKey, email: &str, ca: &Authority) -> Endorser {
        self.issue(kind, email, endorser_params(email), ca)
    }

    /// An endorser certificate that expired on 2024-06-01.
    pub fn expired_endorser(&self, kind: TestKey, email: &str) -> Endorser {
        let mut params = endorser_params(email);
        params.not_after = date_time_ymd(2024, 6, 1);
        self.issue(kind, email, params, &self.ca)
    }

    /// A TLS server certificate (serverAuth only): not for signing entries.
    pub fn host_certificate(&self, email: &str) -> Endorser {
        let mut params = endorser_params(email);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(TestKey::P256, email, params, &self.ca)
    }

    /// A self-signed endorser certificate, to be registered directly.
    pub fn self_signed_endorser(&self, kind: TestKey, email: &str) -> Endorser {
        let key = kind.generate();
        let cert = endorser_params(email).self_signed(&key).unwrap();
        Endorser {
            cert,
            key,
            kind,
            email: email.into(),
        }
    }
}

pub const SHA256: &str = "63579492ebcb6247443c86c2d0892110b9ab7b8aceb30ea2b567b3ce7e0a3f58";

/// Metadata made by `endorser` a day before [`NOW_MS`], valid for a year.
pub fn metadata_for(endorser: &Endorser) -> ImageMetadata {
    let mut metadata = metadata(SHA256, NOW_MS - DAY_MS);
    metadata.endorser = MetadataEndorser {
        email: endorser.email.clone(),
        subject: endorser.subject(),
    };
    metadata
}

/// Metadata of the image with `sha256`, created at `created_ms`, valid for a year.
pub fn metadata(sha256: &str, created_ms: u64) -> ImageMetadata {
    ImageMetadata {
        identifier: identifier_from_sha256(sha256).unwrap(),
        kind: ImageKind::Machine,
        format: DiskFormat::Qcow2,
        compression: Compression::None,
        size: 1 << 20,
        checksums: Checksums {
            sha256: sha256.into(),
            sha1: None,
            md5: None,
        },
        os: "ttylinux".into(),
        os_version: "9.3".into(),
        arch: "x86_64".into(),
        version: "1.0".into(),
        description: "test image".into(),
        locations: vec!["http://127.0.0.1:8080/ttylinux.qcow2".into()],
        endorser: MetadataEndorser {
            email: "jane@example.org".into(),
            subject: "CN=Jane Doe".into(),
        },
        created: format_timestamp(created_ms),
        valid_until: format_timestamp(created_ms + 365 * DAY_MS),
        deprecated: None,
        kernel: None,
        initrd: None,
        cmdline: None,
    }
}

/// Signs `metadata` with the endorser's key; x5c is the endorser's certificate then `chain`.
pub fn sign(
    endorser: &Endorser,
    chain: &[&Certificate],
    metadata: &ImageMetadata,
) -> SignedMetadata {
    let mut ders: Vec<Vec<u8>> = vec![endorser.cert.der().to_vec()];
    ders.extend(chain.iter().map(|c| c.der().to_vec()));
    let unsigned = UnsignedEnvelope::new(&JwsHeader::new(endorser.kind.alg(), &ders), metadata);
    let signature = endorser.sign_bytes(&unsigned.signing_input());
    unsigned.with_signature(&signature)
}

/// A verified entry made without cryptography, for registry and policy tests. Its envelope
/// carries the metadata as its payload (unsigned), as a real entry's does.
pub fn verified(sha256: &str, email: &str, created_ms: u64) -> VerifiedEntry {
    let mut metadata = metadata(sha256, created_ms);
    metadata.endorser.email = email.into();
    let no_certificates: &[Vec<u8>] = &[];
    let envelope = UnsignedEnvelope::new(
        &JwsHeader::new(JwsAlgorithm::ES256, no_certificates),
        &metadata,
    )
    .with_signature(&[]);
    VerifiedEntry {
        endorser_email: email.into(),
        endorser_subject: format!("CN={email}"),
        cert_sha256: "00".repeat(32),
        created_ms,
        valid_until_ms: created_ms + 365 * DAY_MS,
        trust: TrustPath::RegisteredEndorser,
        envelope,
        metadata,
    }
}
