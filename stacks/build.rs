//! Generates the gRPC echo service's client and server with tonic-build's
//! `manual` builder: the service is declared here in Rust and its messages
//! are prost structs derived in `src/grpc_echo.rs`, so no `.proto` file and
//! no `protoc` are needed (a fresh machine builds it with cargo alone). The
//! wire format is ordinary protobuf: `src/grpc_echo.rs` gives the
//! equivalent `.proto` for clients in other languages.

fn main() {
    let echo = tonic_build::manual::Method::builder()
        .name("echo")
        .route_name("Echo")
        .input_type("crate::grpc_echo::EchoRequest")
        .output_type("crate::grpc_echo::EchoReply")
        .codec_path("tonic::codec::ProstCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Echo")
        .package("ferry.stacks")
        .comment("Echoes a payload: the call ferry-bench measures.")
        .method(echo)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
