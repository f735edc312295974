//! The native engine of rdma-nio: RDMA connections for the JVM.
//!
//! The engine owns every RDMA resource (device context through librdmacm,
//! protection domains, registered memory, queue pairs, completion queues) and
//! exposes it three ways that share one core:
//! - the Rust API below (`Listener`, `Connection`), used by the Rust tests;
//! - the C ABI in [`ffi`], whose header cbindgen writes to `target/include/rdmanio.h`;
//! - the JNI exports behind the Java classes `rdmanio.Native` (module `jvm`)
//!   and `rdmanio.nio.SocketNative` (module `jvm_nio`, the NIO provider's).
//!
//! Layout: `verbs` (PD, CQ, MR wrappers), `cm` (rdma_cm channels, identifiers,
//! events), `completions` (completion queues, shared by a selector's accepted
//! connections, and the routing of their completions), `endpoint`
//! (listen/accept/connect of an RC queue pair, the hello, waiting),
//! `connection` (the two-sided message path), `rdma_stream` (a byte
//! stream by RDMA WRITE into the peer's ring), `ring`
//! (one-sided ring buffers: framing, credits and checks, whatever the medium),
//! `shm` (the ring as a stream between processes over shared memory) and
//! `shm_listener` (finding one by address), `stream`
//! (the byte-stream face of every medium), `tcp` (the same face on a kernel
//! socket), `transport` (choosing the medium: rdma, shm, tcp or auto),
//! `socket` (what a Java channel holds: connecting, connected or listening,
//! with blocking waits and close), `poller` (a selector's native half: the
//! readiness of every socket in one call), `sys` (fds and waiting), `error`
//! (the one error type).
#![warn(missing_docs)]

mod cm;
mod completions;
mod connection;
mod endpoint;
mod error;
pub mod ffi;
mod jvm;
mod jvm_nio;
pub mod poller;
mod rdma_stream;
pub mod ring;
mod send_stream;
pub mod shm;
mod shm_listener;
pub mod socket;
pub mod stream;
mod sys;
pub mod tcp;
mod transport;
mod verbs;

#[doc(hidden)]
pub use completions::completion_queues;
pub use connection::{Connection, MAX_MESSAGE_SIZE};
pub use endpoint::Listener;
pub use error::{Error, Result};
pub use rdma_stream::{RdmaStream, StreamOptions};
pub use send_stream::{SendOptions, SendStream};
pub use shm_listener::ShmListener;
pub use stream::{ByteStream, Interest, ReadOutcome};
pub use transport::{
    connect, is_local, Medium, RingPeers, Stream, StreamListener, Transport, TransportOptions,
};
pub use verbs::device_names;
