//! Administrators' commands for hosts: a one-time join token a new host enrols with
//! (`stratus-create-join-token`) and revoking a host's certificates (`stratus-revoke-host`).

pub mod join_token;
pub mod revoke;
