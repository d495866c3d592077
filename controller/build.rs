//! Generates the gRPC service controllers speak to each other (`stratus.peer.v1.Peer`) from
//! its description here, with the prost messages of `src/peer/wire.rs`: no `.proto` file, so
//! no `protoc` is needed to build.

fn method(
    name: &str,
    route: &str,
    input: &str,
    output: &str,
    client_streaming: bool,
) -> tonic_build::manual::Method {
    let builder = tonic_build::manual::Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::peer::wire::{input}"))
        .output_type(format!("crate::peer::wire::{output}"))
        .codec_path("tonic_prost::ProstCodec");
    if client_streaming {
        builder.client_streaming().build()
    } else {
        builder.build()
    }
}

fn main() {
    let peer = tonic_build::manual::Service::builder()
        .name("Peer")
        .package("stratus.peer.v1")
        // The leader asks a node it is about to add who it is; the node adopts the cluster.
        .method(method("join", "Join", "JoinRequest", "JoinReply", false))
        // One stream per peer carries Raft messages, each frame one encoded message.
        .method(method("raft", "Raft", "RaftFrame", "Done", true))
        // A snapshot in checksummed chunks; answered once it is on the receiver's disk.
        .method(method(
            "snapshot",
            "Snapshot",
            "SnapshotChunk",
            "Done",
            true,
        ))
        .build();
    tonic_build::manual::Builder::new().compile(&[peer]);
}
