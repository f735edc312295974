//! What the Java provider's channels and selectors hold, medium-independent.
//!
//! - `socket`: a channel's native half (connecting, connected or listening;
//!   blocking waits; close);
//! - `backlog`: a listener's acceptor thread and the connections it accepted
//!   ahead of `accept`;
//! - `connector`: the threads that make connections, kept for the next one;
//! - `poller`: a selector's native half (the readiness of all its sockets in one call);
//! - `spin`: when a waiter spins before it sleeps (adaptive polling).

pub(crate) mod backlog;
pub mod poller;
pub mod socket;
pub(crate) mod spin;
