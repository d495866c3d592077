//! Administrators' commands for hosts: list them (`stratus-describe-hosts`), put one in
//! maintenance or back in service (`stratus-update-host`), remove one from the cloud
//! (`stratus-remove-host`), make the one-time join token a new host enrols with
//! (`stratus-create-join-token`) and revoke a host's certificates (`stratus-revoke-host`).

pub mod describe;
pub mod join_token;
pub mod remove;
pub mod revoke;
pub mod update;
