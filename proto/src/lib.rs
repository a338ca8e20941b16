//! gRPC definitions of the faultline agent.
//!
//! `pb` is Chaos Mesh's `pb.ChaosDaemon` service, kept wire-compatible (same package, method and
//! message names, field numbers and meanings) so Chaos Mesh's controller-manager can drive a
//! faultline agent. Generated at build time from `proto/` with tonic-prost-build (needs `protoc`).
#![forbid(unsafe_code)]

/// Chaos Mesh's chaos-daemon API.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("pb");
}

/// faultline's own agent API (nested as its package is, so its references to `pb` messages
/// resolve).
pub mod faultline {
    pub mod agent {
        pub mod v1 {
            #![allow(clippy::all)]
            tonic::include_proto!("faultline.agent.v1");
        }
    }
}

pub use faultline::agent;

/// The compiled descriptors of both packages (a `google.protobuf.FileDescriptorSet`).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
