//! The StratusLab controller: a Raft-replicated state machine holding users, hosts, images,
//! networks, volumes and instances ([`state`], replicated by [`replica`]); one service per
//! resource on top of it ([`services`]); placement ([`scheduler`]); and the HTTP API that users,
//! the CLI and the agents talk to ([`api`]).

pub mod accounts;
pub mod api;
pub mod cluster;
pub mod codec;
pub mod command_line;
pub mod config;
pub mod dashboard;
pub mod decide;
pub mod events;
pub mod failure;
pub mod groups;
pub mod guest;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod marketplace;
pub mod metrics;
pub mod networks;
pub mod observed;
pub mod peer;
pub mod persist;
pub mod pki;
pub mod replica;
pub mod scheduler;
pub mod secrets;
pub mod services;
pub mod state;
pub mod users;
pub mod volumes;
