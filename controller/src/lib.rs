//! The StratusLab controller: a Raft-replicated state machine holding users, hosts, images and
//! instances; placement; and the HTTP API that users, the CLI and the agents talk to.

pub mod api;
pub mod cloud;
pub mod codec;
pub mod config;
pub mod guest;
pub mod marketplace;
pub mod raft;
pub mod scheduler;
pub mod secrets;
pub mod state;
