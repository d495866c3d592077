//! A throwaway PKI for Marketplace and login tests: a CA, endorser and user certificates it
//! issues, and self-signed endorsers, written as PEM files into a test's directory.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// PEM files of one endorser's certificate and private key (ECDSA P-256).
#[derive(Debug, Clone)]
pub struct Signer {
    pub email: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    cert_der: Vec<u8>,
    key_pkcs8: Vec<u8>,
}

impl Signer {
    /// Signs `metadata` (JSON) in-process, without the CLI's own checks: for tests of what the
    /// server refuses (say, an entry that has already expired, which the CLI will not sign).
    pub fn sign(&self, metadata: &serde_json::Value) -> anyhow::Result<String> {
        use stratus_common::marketplace::{
            ImageMetadata, JwsAlgorithm, JwsHeader, UnsignedEnvelope,
        };
        let metadata: ImageMetadata = serde_json::from_value(metadata.clone())?;
        let header = JwsHeader::new(JwsAlgorithm::ES256, &[&self.cert_der]);
        let unsigned = UnsignedEnvelope::new(&header, &metadata);
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.key_pkcs8,
            &rng,
        )
        .map_err(|e| anyhow::anyhow!("test key: {e}"))?;
        let signature = key
            .sign(&rng, &unsigned.signing_input())
            .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
        Ok(serde_json::to_string(
            &unsigned.with_signature(signature.as_ref()),
        )?)
    }
}

pub struct TestPki {
    dir: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    /// The CA certificate, PEM, for the controller's `trusted_ca_file`.
    pub ca_file: PathBuf,
}

fn endorser_params(email: &str, not_after_year: i32) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "StratusLab Test");
    params.distinguished_name.push(DnType::CommonName, email);
    params.subject_alt_names = vec![SanType::Rfc822Name(email.try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(not_after_year, 1, 1);
    Ok(params)
}

impl TestPki {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "StratusLab Test");
        params
            .distinguished_name
            .push(DnType::CommonName, "Test Site CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2060, 1, 1);
        let ca_key = KeyPair::generate()?;
        let ca_cert = params.self_signed(&ca_key)?;
        let ca_file = dir.join("ca.pem");
        fs::write(&ca_file, ca_cert.pem())?;
        Ok(Self {
            dir: dir.to_owned(),
            ca_cert,
            ca_key,
            ca_file,
        })
    }

    fn write(
        &self,
        email: &str,
        cert: &rcgen::Certificate,
        key: &KeyPair,
    ) -> anyhow::Result<Signer> {
        let stem = email.replace(['@', '.'], "_");
        let (cert_path, key_path) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        fs::write(&cert_path, cert.pem())?;
        fs::write(&key_path, key.serialize_pem())?;
        Ok(Signer {
            email: email.to_owned(),
            cert: cert_path,
            key: key_path,
            cert_der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
        })
    }

    /// An endorser certificate issued by the site CA.
    pub fn endorser(&self, email: &str) -> anyhow::Result<Signer> {
        let key = KeyPair::generate()?;
        let cert = endorser_params(email, 2060)?.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        self.write(email, &cert, &key)
    }

    /// A user's client certificate (TLS client authentication) issued by the CA, named `name`.
    pub fn user(&self, name: &str) -> anyhow::Result<Signer> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "StratusLab Test");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2060, 1, 1);
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        self.write(name, &cert, &key)
    }

    /// A self-signed endorser certificate (trusted only once registered).
    pub fn self_signed(&self, email: &str) -> anyhow::Result<Signer> {
        let key = KeyPair::generate()?;
        let cert = endorser_params(email, 2060)?.self_signed(&key)?;
        self.write(email, &cert, &key)
    }
}
