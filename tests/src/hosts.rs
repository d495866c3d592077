//! Hosts enrolled by the tests themselves, as an agent would enrol: a join token made by the
//! administrator, a new key and a certificate request, the certificate the site CA signs; and
//! an HTTP client presenting it (mutual TLS).

use anyhow::{bail, Context as _};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A host's certificate and key, and a client presenting them.
pub struct EnrolledHost {
    pub name: String,
    pub serial: String,
    pub certificate_pem: String,
    pub key_pem: String,
    pub client: Client,
}

/// A join token for `host`, made as the administrator through the API at `base`
/// (`https://host:port`).
pub fn join_token(
    http: &Client,
    base: &str,
    admin_password: &str,
    host: &str,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/api/v1/hosts/{host}/join-tokens"))
        .basic_auth("admin", Some(admin_password))
        .json(&json!({}))
        .send()?;
    let status = response.status();
    let body: Value = response.json()?;
    if status != StatusCode::CREATED {
        bail!("join token for {host}: {status} {body}");
    }
    Ok(body["token"].as_str().context("a token")?.to_owned())
}

/// A new key and certificate request for `host` (PEM).
pub fn key_and_request(host: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    Ok((key.serialize_pem(), params.serialize_request(&key)?.pem()?))
}

/// A client trusting `ca_pem` only, presenting `identity` (certificate and key, PEM) if any.
pub fn client(ca_pem: &[u8], identity: Option<(&str, &str)>) -> anyhow::Result<Client> {
    let mut builder = Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem)?)
        .timeout(std::time::Duration::from_secs(30));
    if let Some((certificate, key)) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(
            format!("{certificate}\n{key}").as_bytes(),
        )?);
    }
    Ok(builder.build()?)
}

/// Enrols `host` with `token` through the API at `base`.
pub fn enrol(base: &str, ca_pem: &[u8], host: &str, token: &str) -> anyhow::Result<EnrolledHost> {
    let (key_pem, csr) = key_and_request(host)?;
    let response = client(ca_pem, None)?
        .post(format!("{base}/api/v1/hosts/{host}/certificate"))
        .json(&json!({"csr": csr, "join_token": token}))
        .send()?;
    let status = response.status();
    let body: Value = response.json()?;
    if status != StatusCode::CREATED {
        bail!("enrolling {host}: {status} {body}");
    }
    let certificate_pem = body["certificate"]
        .as_str()
        .context("a certificate")?
        .to_owned();
    Ok(EnrolledHost {
        name: host.to_owned(),
        serial: body["serial"].as_str().context("a serial")?.to_owned(),
        client: client(ca_pem, Some((&certificate_pem, &key_pem)))?,
        certificate_pem,
        key_pem,
    })
}
