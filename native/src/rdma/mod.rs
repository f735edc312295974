//! RDMA: verbs objects and connection management, the only layer that uses
//! `rdma_sys`. Data paths above it see typed wrappers: a queue pair posts
//! [`verbs::SendRequest`]s and receives, a completion queue yields
//! [`verbs::Completion`]s, a memory region holds its protection domain.
//!
//! - `verbs`: device, protection domain, memory region, shared receive queue,
//!   completion queue, queue pair, work requests and completions;
//! - `cm`: rdma_cm event channels, identifiers and events;
//! - `completions`: a selector's completion queue shared by its connections,
//!   or a connection's own, and the routing of completions to each;
//! - `hello`: the private data of connect requests and replies;
//! - `device_events`: a device's asynchronous events (a port gone down), which
//!   fail the queue pairs concerned;
//! - `endpoint`: listen, accept and connect of an RC queue pair, and the wait
//!   loop every data path shares;
//! - `connection`: the two-sided message connection (`Connection`);
//! - `closer`: a closed connection kept until its last writes landed and its
//!   disconnect was confirmed (the closer thread).

pub mod closer;
pub(crate) mod cm;
pub mod completions;
pub mod connection;
pub(crate) mod device_events;
pub mod endpoint;
pub(crate) mod hello;
pub mod verbs;
