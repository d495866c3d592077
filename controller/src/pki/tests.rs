use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

fn verifies_as_server(ca: &SiteCa, certificate_pem: &str, name: &str) -> Result<(), String> {
    let ca_der = CertificateDer::from(ca.certificate_der());
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).map_err(|e| e.to_string())?;
    let der = CertificateDer::from(pem_certificates(certificate_pem).unwrap().remove(0));
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| e.to_string())?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|e| e.to_string())
}

#[test]
fn a_new_cluster_makes_its_ca_once_and_a_restart_loads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let (ca, created) = SiteCa::load_or_create(&cert, &key, true).unwrap();
    assert!(created);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&key),
        0o600,
        "the key is readable by the controller only"
    );
    assert_eq!(mode(&cert), 0o644);
    let (again, created) = SiteCa::load_or_create(&cert, &key, true).unwrap();
    assert!(!created);
    assert_eq!(again.certificate_pem(), ca.certificate_pem());
    // A certificate issued after the restart chains to the CA made before it.
    let node = again
        .issue_node(2, &["127.0.0.1".into(), "ctl2.example.org".into()])
        .unwrap();
    verifies_as_server(&ca, &node.certificate_pem, "ctl2.example.org").unwrap();
    verifies_as_server(&ca, &node.certificate_pem, "127.0.0.1").unwrap();
    let wrong = verifies_as_server(&ca, &node.certificate_pem, "ctl3.example.org").unwrap_err();
    assert!(wrong.contains("NotValidForName"), "{wrong}");
    let der = pem_certificates(&node.certificate_pem).unwrap().remove(0);
    assert_eq!(holder_of(&der), Some(Holder::Controller(2)));
}

#[test]
fn a_joining_node_without_the_ca_and_half_a_ca_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let err = SiteCa::load_or_create(&cert, &key, false).unwrap_err();
    assert!(
        err.to_string().contains("copy its CA certificate and key"),
        "{err}"
    );
    assert!(!cert.exists() && !key.exists());
    SiteCa::load_or_create(&cert, &key, true).unwrap();
    fs::remove_file(&key).unwrap();
    let err = SiteCa::load_or_create(&cert, &key, true).unwrap_err();
    assert!(matches!(err, PkiError::HalfMissing { .. }), "{err}");
    // Another CA's key with this certificate.
    let other = dir.path().join("other");
    SiteCa::load_or_create(&other.join("ca.pem"), &other.join("ca.key"), true).unwrap();
    fs::copy(other.join("ca.key"), &key).unwrap();
    let err = SiteCa::load_or_create(&cert, &key, true).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
}

#[test]
fn a_host_certificate_names_the_host_whatever_the_request_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) =
        SiteCa::load_or_create(&dir.path().join("ca.pem"), &dir.path().join("ca.key"), true)
            .unwrap();
    // The request claims to be a controller; the CA decides what the certificate says.
    let host_key = KeyPair::generate().unwrap();
    let mut asked = CertificateParams::new(vec!["evil.example.org".to_owned()]).unwrap();
    asked
        .distinguished_name
        .push(DnType::OrganizationalUnitName, OU_CONTROLLER);
    asked
        .distinguished_name
        .push(DnType::CommonName, "controller-1");
    let request = asked.serialize_request(&host_key).unwrap().pem().unwrap();
    let now = SystemTime::now();
    let issued = ca
        .sign_host(
            "node-7",
            &request,
            &["192.0.2.7".into()],
            now,
            Duration::from_secs(3600),
        )
        .unwrap();
    let der = pem_certificates(&issued.certificate_pem).unwrap().remove(0);
    assert_eq!(
        holder_of(&der),
        Some(Holder::Host {
            name: "node-7".into(),
            serial: issued.serial.clone()
        })
    );
    assert_eq!(issued.serial.len(), 32);
    // The subject, attribute by attribute in the certificate's order, is what an NBD
    // export's authorization list of this host names.
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    let subject: Vec<String> = parsed
        .subject()
        .iter_attributes()
        .map(|a| {
            let short = match a.attr_type().to_id_string().as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                other => panic!("unexpected attribute {other}"),
            };
            format!("{short}={}", a.as_str().unwrap())
        })
        .collect();
    assert_eq!(
        subject.join(","),
        stratus_common::subjects::host_dn("node-7")
    );
    verifies_as_server(&ca, &issued.certificate_pem, "node-7").unwrap();
    verifies_as_server(&ca, &issued.certificate_pem, "192.0.2.7").unwrap();
    assert!(verifies_as_server(&ca, &issued.certificate_pem, "evil.example.org").is_err());
    let expected = now + Duration::from_secs(3600);
    let expected_ms = expected
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(issued.not_after_ms, expected_ms);
    // A request whose signature does not match its key is refused.
    let mut forged = request.clone().into_bytes();
    let at = forged.len() - 40;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(ca
        .sign_host("node-7", &forged, &[], now, Duration::from_secs(60))
        .is_err());
}

#[test]
fn other_certificates_are_users_named_by_their_subject() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Grid");
    params
        .distinguished_name
        .push(DnType::CommonName, "Jane Doe");
    let der = params.self_signed(&key).unwrap().der().to_vec();
    assert_eq!(
        holder_of(&der),
        Some(Holder::User {
            subject: "O=Example Grid,CN=Jane Doe".into()
        })
    );
}

#[test]
fn every_host_certificate_reads_back_with_the_serial_it_was_recorded_under() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) =
        SiteCa::load_or_create(&dir.path().join("ca.pem"), &dir.path().join("ca.key"), true)
            .unwrap();
    let host_key = KeyPair::generate().unwrap();
    let request = CertificateParams::new(vec!["node-1".to_owned()])
        .unwrap()
        .serialize_request(&host_key)
        .unwrap()
        .pem()
        .unwrap();
    // A serial whose first byte were zero would lose it in DER: 1,000 tries find one if the
    // first byte could be zero (half a percent each).
    for _ in 0..1000 {
        let issued = ca
            .sign_host(
                "node-1",
                &request,
                &[],
                SystemTime::now(),
                Duration::from_secs(60),
            )
            .unwrap();
        let der = pem_certificates(&issued.certificate_pem).unwrap().remove(0);
        let Some(Holder::Host { serial, .. }) = holder_of(&der) else {
            panic!("not a host certificate");
        };
        assert_eq!(serial, issued.serial);
    }
}
