//! How Raft messages leave this node. The node hands every outgoing message to a
//! [`Transport`] and never waits for it: a message may be lost, delayed or duplicated, which
//! Raft tolerates by design. Messages from peers come back in through `Replica::step`.

use raft::prelude::Message;

/// Carries Raft messages to peers.
pub trait Transport: Send + Sync + 'static {
    /// Sends `message` to node `message.to`, best effort and without blocking.
    fn send(&self, message: Message);
}

/// The transport of a group of one: there is nobody to send to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, message: Message) {
        tracing::debug!(to = message.to, "no peers: dropping a raft message");
    }
}
