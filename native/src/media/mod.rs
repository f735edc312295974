//! The media: every connection is a [`stream::ByteStream`], whatever carries it.
//!
//! - `stream`: the face (non-blocking calls, blocking ones built on them);
//! - `ring`: the one-sided ring protocol (framing, wrap-around, credits, record checks);
//! - `rdma_stream`: rings in the peer's memory, written by RDMA WRITE;
//! - `send_stream` and `receive_pool`: two-sided sends with credits, into a
//!   listener's shared receive queue;
//! - `shm` and `shm_listener`: rings in shared memory, and their rendezvous by IP:port;
//! - `tcp`: a kernel socket;
//! - `pipe`: a kernel pipe's ends (the provider's `Pipe`), not a connection's medium;
//! - `datagram`: a kernel UDP socket (the provider's `DatagramChannel`), likewise;
//! - `transport`: choosing the medium for a peer (rdma, shm, tcp, auto).

pub(crate) mod connecting;
pub mod datagram;
pub mod pipe;
pub mod rdma_stream;
pub(crate) mod receive_pool;
pub mod ring;
pub mod send_stream;
pub mod shm;
pub mod shm_listener;
pub mod shm_reuse;
pub mod stream;
pub mod tcp;
pub mod transport;
