//! The Marketplace: a registry of signed image metadata entries, as the StratusLab Marketplace
//! slides describe it. An upload is opened and its structure checked (`common::marketplace`),
//! its signature and certificate verified against the site's trust ([`verify`]), and the entry is
//! appended to the [`registry::Registry`], which never forgets. Before an instance starts, the
//! site [`policy`] picks the entry that may be used.
//!
//! Pure logic and cryptography: no HTTP, no Raft, no clock (the caller passes `now_ms`, decided
//! before a command is proposed, so replicas agree).
//!
//! Crates, and why:
//! - `rustls-webpki` (with `ring`) builds and checks certificate chains. It is the path builder
//!   rustls relies on, small and memory-safe; its custom extended-key-usage hook lets endorsement
//!   certificates carry emailProtection, codeSigning, clientAuth (grid user certificates) or no
//!   EKU, so it is not tied to TLS server names.
//! - `ring` verifies the JWS signature with the leaf's key (RSA PKCS#1 v1.5 SHA-256, ECDSA
//!   P-256/SHA-256 and P-384/SHA-384 in JWS's fixed `r || s` form), and hashes fingerprints.
//! - `x509-parser` (through `common::certificate`) reads the subject, emails and validity, which
//!   webpki deliberately does not expose.
//! - `rcgen` (tests only) makes CAs, endorser certificates and keys.

pub mod policy;
pub mod registry;
pub mod trust;
pub mod verify;

#[cfg(test)]
pub(crate) mod testing;

pub use policy::{evaluate, PolicyConfigError, PolicyRefusal, SitePolicy};
pub use registry::{Page, Query, Registry, RegistryError, ResolveError, StoredEntry};
pub use trust::{TrustError, TrustStore};
pub use verify::{verify, TrustPath, VerifiedEntry, VerifyError, MAX_CLOCK_SKEW_MS};
