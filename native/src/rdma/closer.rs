//! Closed RDMA connections that outlive their owner until the close is
//! complete, as TCP's orphaned sockets outlive `close()`: the streams of
//! `media` (rings, two-sided sends), the message `Connection`, and the
//! provider's sockets over them.
//!
//! Over RDMA a close reaches the peer only as the connection manager's
//! disconnect request, which moves our queue pair to the error state and so
//! discards whatever is still to be (re)transmitted. A close therefore
//! disconnects only once the last writes were acknowledged; and the
//! identifier must live until the peer confirmed the disconnect, since
//! destroying it cancels the request's retransmissions (a request lost on the
//! wire would never reach the peer, whose reads would wait forever).
//!
//! On a working link the writes land within a round trip: the close waits for
//! them (up to `CLOSE_WAIT`) and disconnects, and the confirmation comes a
//! round trip later. Whatever takes longer (retransmissions after loss, a peer
//! gone) is left to the closer thread (`rdmanio-closer`), and the caller goes
//! on, as after a TCP close without `SO_LINGER`: dropping a [`Closing`] hands
//! it the connection, and closing a provider's socket hands it the socket
//! (`Socket::close_handing_over`), which a selector may hold until its next
//! select. The closer moves each close on (`Settle`) and lets go once it is
//! complete, or after `ORPHAN_LIMIT`. The thread ends when it held none for 2 s.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long a close waits in the caller for its last writes to land: a round
/// trip on a working link, more under emulation.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_millis(200);
/// How long the closer keeps a connection at most: the peer may be gone, or its
/// reply lost; the connection manager retries its request for about a minute
/// (under 1% loss, a few of 1,000 closes were still unconfirmed after 30 s).
const ORPHAN_LIMIT: Duration = Duration::from_secs(60);
/// The closer looks again this soon after a stream came, and backs off to
/// `LONGEST_PAUSE` while none completes.
const SHORTEST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);
/// The closer thread ends once it held nothing for this long.
const IDLE_EXIT: Duration = Duration::from_secs(2);

/// What the closer needs of a closed connection.
pub trait Settle: Send + 'static {
    /// Moves a close on without waiting: disconnects once the last writes were
    /// acknowledged (or failed). True once the peer confirmed the disconnect,
    /// or the connection failed: then the connection may drop.
    fn settle(&mut self) -> bool;
}

/// A connection that a [`Closing`] closes when it is dropped.
pub trait Close: Settle {
    /// Starts the close: waits at most `CLOSE_WAIT` for the writes in flight
    /// to land, and disconnects if they did.
    fn start_close(&mut self);
}

/// An RDMA connection that, when dropped, closes (`Close`) and leaves to the
/// closer what the close could not finish at once. Everything else is the
/// connection's (it dereferences to it).
pub struct Closing<S: Close>(Option<Box<S>>);

impl<S: Close> Closing<S> {
    pub(crate) fn new(stream: S) -> Self {
        Closing(Some(Box::new(stream)))
    }
}

impl<S: Close> Deref for Closing<S> {
    type Target = S;

    fn deref(&self) -> &S {
        self.0.as_deref().expect("a connection is taken only by its drop")
    }
}

impl<S: Close> DerefMut for Closing<S> {
    fn deref_mut(&mut self) -> &mut S {
        self.0.as_deref_mut().expect("a connection is taken only by its drop")
    }
}

impl<S: Close> Drop for Closing<S> {
    fn drop(&mut self) {
        let Some(mut stream) = self.0.take() else { return };
        stream.start_close();
        if !stream.settle() {
            adopt(stream);
        }
    }
}

/// Connections the closer holds (for tests and diagnostics).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// How many closed connections wait for their close to complete.
pub fn closing_streams() -> usize {
    HELD.load(Ordering::Acquire)
}

struct Orphan {
    stream: Box<dyn Settle>,
    until: Instant,
}

struct Closer {
    /// Connections handed over since the thread last took them.
    arrived: Vec<Orphan>,
    running: bool,
}

static CLOSER: Mutex<Closer> = Mutex::new(Closer { arrived: Vec::new(), running: false });
static ARRIVAL: Condvar = Condvar::new();

/// Holds `stream` until its close is complete (see `Settle`), or `ORPHAN_LIMIT`.
pub(crate) fn adopt(stream: Box<dyn Settle>) {
    HELD.fetch_add(1, Ordering::AcqRel);
    let mut closer = CLOSER.lock();
    closer.arrived.push(Orphan { stream, until: Instant::now() + ORPHAN_LIMIT });
    if closer.running {
        ARRIVAL.notify_one();
        return;
    }
    let started = thread::Builder::new().name("rdmanio-closer".into()).spawn(run);
    match started {
        Ok(_) => closer.running = true,
        Err(err) => {
            // No thread: the streams go now, with what they had in flight.
            log::error!("cannot start the closer thread ({err}); closing connections at once");
            let orphans = std::mem::take(&mut closer.arrived);
            drop(closer);
            orphans.into_iter().for_each(forget_orphan);
        }
    }
}

fn forget_orphan(orphan: Orphan) {
    drop(orphan.stream);
    HELD.fetch_sub(1, Ordering::AcqRel);
}

/// The closer thread: settles its streams, sleeping between rounds, until it
/// held none for `IDLE_EXIT`.
fn run() {
    let mut held: Vec<Orphan> = Vec::new();
    let mut pause = SHORTEST_PAUSE;
    loop {
        {
            let mut closer = CLOSER.lock();
            if closer.arrived.is_empty() && held.is_empty() {
                // Kept a while for the next close: churning connections would
                // otherwise start a thread for nearly every one.
                if ARRIVAL.wait_for(&mut closer, IDLE_EXIT).timed_out() && closer.arrived.is_empty() {
                    closer.running = false;
                    return;
                }
            } else if closer.arrived.is_empty() {
                ARRIVAL.wait_for(&mut closer, pause);
            }
            if !closer.arrived.is_empty() {
                pause = SHORTEST_PAUSE;
                held.append(&mut closer.arrived);
            }
        }
        let before = held.len();
        let now = Instant::now();
        for mut orphan in std::mem::take(&mut held) {
            if orphan.stream.settle() {
                forget_orphan(orphan);
            } else if now >= orphan.until {
                // Its writes failed or landed long ago (the transport's retries
                // end within seconds): the peer's reply to the disconnect is missing.
                log::info!(
                    "a closed RDMA connection's peer did not confirm the disconnect in {ORPHAN_LIMIT:?}"
                );
                forget_orphan(orphan);
            } else {
                held.push(orphan);
            }
        }
        if held.len() == before {
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}
