//! The subjects of the certificates a site CA issues to its own parts: the organization and
//! the organizational unit that names the holder's role, with the holder's name as common
//! name. The controller issues and checks them; an agent names the one host its NBD exports
//! open for by them.

/// The organization of every certificate a site CA issues.
pub const ORGANIZATION: &str = "StratusLab";
/// The organizational unit of controller node certificates.
pub const OU_CONTROLLER: &str = "stratuslab-controller";
/// The organizational unit of host certificates.
pub const OU_HOST: &str = "stratuslab-host";

/// The distinguished name of host `host`'s certificate as QEMU's TLS layer (GnuTLS) renders
/// it for its authorization lists: attributes in the order the certificate holds them, which
/// is common name, organization, unit: `CN=<host>,O=StratusLab,OU=stratuslab-host`. A host
/// name (see [`crate::names`]) holds no character that needs escaping in a DN.
pub fn host_dn(host: &str) -> String {
    format!("CN={host},O={ORGANIZATION},OU={OU_HOST}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_dn_names_the_role_and_the_host() {
        assert_eq!(
            host_dn("node-1.example.org"),
            "CN=node-1.example.org,O=StratusLab,OU=stratuslab-host"
        );
    }
}
