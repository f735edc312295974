//! The native engine of rdma-nio: RDMA connections for the JVM.
//!
//! The engine owns every RDMA resource (device context through librdmacm,
//! protection domains, registered memory, queue pairs, completion queues).
//! Its layers, each a folder, each using only the ones listed before it:
//! - [`sys`]: the plain syscalls around verbs (event fds, epoll sets, fd
//!   passing, random bytes, bounded waits);
//! - [`rdma`]: verbs objects, rdma_cm, completion queues and their routing,
//!   connection setup and its hello, the two-sided message connection; the
//!   only module that uses the verbs bindings;
//! - [`media`]: the byte-stream face ([`ByteStream`]) and the media behind it:
//!   RDMA rings, two-sided sends, shared memory, TCP, and the choice among them;
//! - [`nio`]: what the Java provider's channels and selectors hold: the socket
//!   state machine, the acceptor's backlog, the poller;
//! - [`bindings`]: the JNI exports behind `rdmanio.Native` and
//!   `rdmanio.nio.SocketNative`, and the C ABI ([`bindings::ffi`], whose
//!   header cbindgen writes to `target/include/rdmanio.h`).
//!
//! [`error`] is the one error type all layers share.
#![warn(missing_docs)]

pub mod bindings;
pub mod error;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod nio;
pub mod rdma;
mod sys;

pub use bindings::ffi;
pub use error::{Error, Result};
pub use media::rdma_stream::{RdmaStream, StreamOptions};
pub use media::send_stream::{SendOptions, SendStream};
pub use media::shm_listener::ShmListener;
pub use media::stream::{ByteStream, Interest, ReadOutcome};
pub use media::transport::{
    connect, is_local, Medium, RingPeers, Stream, StreamListener, Transport, TransportOptions,
};
#[doc(hidden)]
pub use rdma::closer::closing_streams;
#[doc(hidden)]
pub use rdma::completions::completion_queues;
pub use rdma::connection::{Connection, MAX_MESSAGE_SIZE};
pub use rdma::endpoint::Listener;
pub use rdma::verbs::device_names;
