//! What the Java provider's channels and selectors hold, medium-independent.
//!
//! - `socket`: a channel's native half (connecting, connected or listening;
//!   blocking waits; close);
//! - `backlog`: where a listener's connections wait for `accept` (the
//!   kernel's queue, or the one its acceptor thread fills);
//! - `poller`: a selector's native half (the readiness of all its sockets in one call);
//! - `spin`: when a waiter spins before it sleeps (adaptive polling).

pub(crate) mod backlog;
pub mod poller;
pub mod socket;
pub(crate) mod spin;
