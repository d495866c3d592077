//! The endorser's signing credentials: an X.509 certificate (with any intermediates) and its
//! private key, from PEM files (RSA keys in PKCS#1 or PKCS#8, ECDSA P-256/P-384 keys in SEC1 or
//! PKCS#8) or a PKCS#12 file, as the user's guide configures them; and signing metadata with them
//! into the Marketplace's JWS envelope.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stratus_common::certificate::{read_certificate, CertificateInfo};
use stratus_common::marketplace::{
    ImageMetadata, JwsAlgorithm, JwsHeader, SignedMetadata, UnsignedEnvelope,
};
use thiserror::Error;

use crate::config::SigningCredentials;

#[derive(Debug, Error)]
pub enum CredentialError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not a PEM private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "{}: the key is encrypted; give an unencrypted copy \
         (openssl pkey -in KEY -out PLAIN-KEY, kept private) or use a PKCS#12 file with --p12-cert",
        path.display()
    )]
    EncryptedKey { path: PathBuf },
    #[error("{}: cannot open the PKCS#12 file (wrong password, or not PKCS#12): {reason}", path.display())]
    Pkcs12 { path: PathBuf, reason: String },
    #[error("{}: no private key with a certificate in the PKCS#12 file", path.display())]
    Pkcs12NoKey { path: PathBuf },
    #[error(
        "{}: the key is neither RSA (2048 to 8192 bits) nor ECDSA P-256 or P-384",
        path.display()
    )]
    UnsupportedKey { path: PathBuf },
    #[error("{}: certificate {index}: {reason}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{}: no certificate matches the private key", path.display())]
    KeyMismatch { path: PathBuf },
    #[error("signing failed")]
    Sign,
}

enum SigningKey {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair, JwsAlgorithm),
}

impl SigningKey {
    fn public_key(&self) -> &[u8] {
        match self {
            Self::Rsa(key) => key.public_key().as_ref(),
            Self::Ecdsa(key, _) => key.public_key().as_ref(),
        }
    }
}

/// A certificate chain and the key of its first certificate, ready to sign.
pub struct Signer {
    /// DER certificates, the signer's first.
    chain: Vec<Vec<u8>>,
    certificate: CertificateInfo,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &self.certificate.subject)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CredentialError> {
    fs::read(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl Signer {
    /// Loads the configured credentials.
    pub fn load(credentials: &SigningCredentials) -> Result<Self, CredentialError> {
        match credentials {
            SigningCredentials::Pem { certificate, key } => {
                Self::from_pem(certificate, &read_file(certificate)?, key, &read_file(key)?)
            }
            SigningCredentials::Pkcs12 { file, password } => {
                Self::from_pkcs12(file, &read_file(file)?, password)
            }
        }
    }

    /// From PEM texts: certificates (the signer's and any intermediates, in any order) and an
    /// unencrypted private key. The paths name the inputs in messages.
    pub fn from_pem(
        certificate_path: &Path,
        certificate_pem: &[u8],
        key_path: &Path,
        key_pem: &[u8],
    ) -> Result<Self, CredentialError> {
        let bad_key = |reason: String| CredentialError::BadKey {
            path: key_path.to_path_buf(),
            reason,
        };
        if contains(key_pem, b"ENCRYPTED") {
            return Err(CredentialError::EncryptedKey {
                path: key_path.to_path_buf(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad_key(e.to_string()))?;
        let key = match key {
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(SigningKey::Rsa)
                .map_err(|e| bad_key(format!("RSA key rejected: {e}")))?,
            PrivateKeyDer::Pkcs8(der) => {
                key_from_pkcs8(der.secret_pkcs8_der()).ok_or_else(|| {
                    CredentialError::UnsupportedKey {
                        path: key_path.to_path_buf(),
                    }
                })?
            }
            PrivateKeyDer::Sec1(der) => [&CURVE_P256[..], &CURVE_P384[..]]
                .into_iter()
                .find_map(|curve| key_from_pkcs8(&sec1_to_pkcs8(der.secret_sec1_der(), curve)))
                .ok_or_else(|| CredentialError::UnsupportedKey {
                    path: key_path.to_path_buf(),
                })?,
            _ => {
                return Err(CredentialError::UnsupportedKey {
                    path: key_path.to_path_buf(),
                })
            }
        };
        let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(certificate_pem)
            .map(|c| c.map(|der| der.as_ref().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| CredentialError::BadCertificate {
                path: certificate_path.to_path_buf(),
                index: 0,
                reason: e.to_string(),
            })?;
        if certificates.is_empty() {
            return Err(CredentialError::NoCertificate {
                path: certificate_path.to_path_buf(),
            });
        }
        Self::assemble(certificate_path, certificates, key)
    }

    /// From a PKCS#12 file's bytes and its password.
    pub fn from_pkcs12(path: &Path, data: &[u8], password: &str) -> Result<Self, CredentialError> {
        let store =
            KeyStore::from_pkcs12(data, password, Pkcs12ImportPolicy::Relaxed).map_err(|e| {
                CredentialError::Pkcs12 {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| CredentialError::Pkcs12NoKey {
                path: path.to_path_buf(),
            })?;
        let key = key_from_pkcs8(chain.key().as_der()).ok_or_else(|| {
            CredentialError::UnsupportedKey {
                path: path.to_path_buf(),
            }
        })?;
        let mut certificates: Vec<Vec<u8>> =
            chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
        // Certificates the file holds outside the key's chain may be its intermediates.
        for (_, entry) in store.entries() {
            if let p12_keystore::KeyStoreEntry::Certificate(c) = entry {
                if !certificates.iter().any(|d| d == c.as_der()) {
                    certificates.push(c.as_der().to_vec());
                }
            }
        }
        if certificates.is_empty() {
            return Err(CredentialError::Pkcs12NoKey {
                path: path.to_path_buf(),
            });
        }
        Self::assemble(path, certificates, key)
    }

    /// Puts the certificate whose public key is the key's first; the others follow in order,
    /// without any self-signed root (verifiers have their own roots).
    fn assemble(
        path: &Path,
        certificates: Vec<Vec<u8>>,
        key: SigningKey,
    ) -> Result<Self, CredentialError> {
        let mut infos = Vec::with_capacity(certificates.len());
        for (index, der) in certificates.iter().enumerate() {
            infos.push(
                read_certificate(der).map_err(|e| CredentialError::BadCertificate {
                    path: path.to_path_buf(),
                    index,
                    reason: e.to_string(),
                })?,
            );
        }
        let leaf = infos
            .iter()
            .position(|info| info.public_key == key.public_key())
            .ok_or_else(|| CredentialError::KeyMismatch {
                path: path.to_path_buf(),
            })?;
        let mut chain = vec![certificates[leaf].clone()];
        for (index, der) in certificates.iter().enumerate() {
            if index != leaf && infos[index].subject != infos[index].issuer {
                chain.push(der.clone());
            }
        }
        Ok(Self {
            chain,
            certificate: infos.swap_remove(leaf),
            key,
        })
    }

    /// The signer's certificate.
    pub fn certificate(&self) -> &CertificateInfo {
        &self.certificate
    }

    /// The DER certificates that go into `x5c`, the signer's first.
    #[cfg(test)]
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The JWS algorithm this key signs with.
    pub fn algorithm(&self) -> JwsAlgorithm {
        match &self.key {
            SigningKey::Rsa(_) => JwsAlgorithm::RS256,
            SigningKey::Ecdsa(_, alg) => *alg,
        }
    }

    /// Signs `metadata` as it is (the caller fills in and validates it first).
    pub fn sign(&self, metadata: &ImageMetadata) -> Result<SignedMetadata, CredentialError> {
        let header = JwsHeader::new(self.algorithm(), &self.chain);
        let unsigned = UnsignedEnvelope::new(&header, metadata);
        let input = unsigned.signing_input();
        let rng = SystemRandom::new();
        let signature = match &self.key {
            SigningKey::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, &input, &mut signature)
                    .map_err(|_| CredentialError::Sign)?;
                signature
            }
            SigningKey::Ecdsa(key, _) => key
                .sign(&rng, &input)
                .map_err(|_| CredentialError::Sign)?
                .as_ref()
                .to_vec(),
        };
        Ok(unsigned.with_signature(&signature))
    }
}

/// An RSA or ECDSA key from PKCS#8 DER; `None` for other keys.
fn key_from_pkcs8(der: &[u8]) -> Option<SigningKey> {
    if let Ok(key) = RsaKeyPair::from_pkcs8(der) {
        return Some(SigningKey::Rsa(key));
    }
    let rng = SystemRandom::new();
    [
        (&ECDSA_P256_SHA256_FIXED_SIGNING, JwsAlgorithm::ES256),
        (&ECDSA_P384_SHA384_FIXED_SIGNING, JwsAlgorithm::ES384),
    ]
    .into_iter()
    .find_map(|(alg, jws)| {
        EcdsaKeyPair::from_pkcs8(alg, der, &rng)
            .ok()
            .map(|key| SigningKey::Ecdsa(key, jws))
    })
}

/// DER of the curve OIDs, for wrapping SEC1 keys.
const CURVE_P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const CURVE_P384: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const EC_PUBLIC_KEY: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// Wraps a SEC1 `ECPrivateKey` into PKCS#8 for `curve`, which is how `ring` takes EC keys. `ring`
/// refuses the result if the key's own curve parameter says otherwise, so trying each curve
/// finds the right one.
fn sec1_to_pkcs8(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
    let mut algorithm = EC_PUBLIC_KEY.to_vec();
    algorithm.extend_from_slice(curve);
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend(der_tlv(0x30, &algorithm));
    body.extend(der_tlv(0x04, sec1));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair as RcgenKeyPair, SanType};

    use super::*;

    const RSA_PKCS1: &str = include_str!("../tests/data/rsa-2048.pkcs1.pem");
    const RSA_PKCS8: &str = include_str!("../tests/data/rsa-2048.pk8.pem");
    const EC_P256_SEC1: &str = include_str!("../tests/data/ec-p256.sec1.pem");
    const EC_P384_SEC1: &str = include_str!("../tests/data/ec-p384.sec1.pem");

    /// A self-signed certificate for `key_pem` (rcgen reads PKCS#8; SEC1 and PKCS#1 keys are
    /// certified through their PKCS#8 twin).
    fn certificate_for(key: &RcgenKeyPair) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Jane Doe");
        params.subject_alt_names =
            vec![SanType::Rfc822Name("jane@example.org".try_into().unwrap())];
        params.self_signed(key).unwrap().pem()
    }

    fn pkcs8_of(pem: &str) -> RcgenKeyPair {
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let pkcs8 = match key {
            PrivateKeyDer::Sec1(der) => {
                let curve = if pem == EC_P256_SEC1 {
                    &CURVE_P256[..]
                } else {
                    &CURVE_P384[..]
                };
                sec1_to_pkcs8(der.secret_sec1_der(), curve)
            }
            PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
            _ => unreachable!("fixtures are SEC1 or PKCS#8"),
        };
        RcgenKeyPair::try_from(pkcs8.as_slice()).unwrap()
    }

    #[test]
    fn loads_each_pem_key_form() {
        let cases = [
            (RSA_PKCS1, RSA_PKCS8, JwsAlgorithm::RS256),
            (RSA_PKCS8, RSA_PKCS8, JwsAlgorithm::RS256),
            (EC_P256_SEC1, EC_P256_SEC1, JwsAlgorithm::ES256),
            (EC_P384_SEC1, EC_P384_SEC1, JwsAlgorithm::ES384),
        ];
        for (key_pem, twin, alg) in cases {
            let cert = certificate_for(&pkcs8_of(twin));
            let signer = Signer::from_pem(
                Path::new("cert.pem"),
                cert.as_bytes(),
                Path::new("key.pem"),
                key_pem.as_bytes(),
            )
            .unwrap();
            assert_eq!(signer.algorithm(), alg);
            assert_eq!(signer.certificate().subject, "CN=Jane Doe");
            assert_eq!(signer.certificate().emails, ["jane@example.org"]);
            assert_eq!(signer.chain().len(), 1);
        }
    }

    #[test]
    fn the_key_must_match_a_certificate() {
        let cert = certificate_for(&pkcs8_of(EC_P256_SEC1));
        let err = Signer::from_pem(
            Path::new("cert.pem"),
            cert.as_bytes(),
            Path::new("key.pem"),
            EC_P384_SEC1.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cert.pem: no certificate matches the private key"
        );
    }

    #[test]
    fn encrypted_and_garbage_keys_are_explained() {
        let cert = certificate_for(&pkcs8_of(EC_P256_SEC1));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = Signer::from_pem(
            Path::new("c"),
            cert.as_bytes(),
            Path::new("userkey.pem"),
            encrypted.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialError::EncryptedKey { .. }), "{err}");
        let err =
            Signer::from_pem(Path::new("c"), cert.as_bytes(), Path::new("k"), b"junk").unwrap_err();
        assert!(matches!(err, CredentialError::BadKey { .. }), "{err}");
        let err = Signer::from_pem(Path::new("c"), b"", Path::new("k"), EC_P256_SEC1.as_bytes())
            .unwrap_err();
        assert!(
            matches!(err, CredentialError::NoCertificate { .. }),
            "{err}"
        );
    }

    #[test]
    fn loads_pkcs12_and_refuses_a_wrong_password() {
        let key = pkcs8_of(RSA_PKCS8);
        let cert_pem = certificate_for(&key);
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let chain = p12_keystore::PrivateKeyChain::new(
            b"id".to_vec(),
            p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
            [p12_keystore::Certificate::from_der(cert_der.as_ref()).unwrap()],
        );
        let mut store = KeyStore::new();
        store.add_entry("jane", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let p12 = store.writer("secret").write().unwrap();

        let signer = Signer::from_pkcs12(Path::new("u.p12"), &p12, "secret").unwrap();
        assert_eq!(signer.algorithm(), JwsAlgorithm::RS256);
        assert_eq!(signer.certificate().subject, "CN=Jane Doe");
        let err = Signer::from_pkcs12(Path::new("u.p12"), &p12, "wrong").unwrap_err();
        assert!(matches!(err, CredentialError::Pkcs12 { .. }), "{err}");
    }

    #[test]
    fn der_lengths_use_the_long_form_past_127() {
        assert_eq!(der_tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        let long = der_tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}
