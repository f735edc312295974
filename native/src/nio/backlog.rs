//! A listener's backlog: an acceptor thread per listener completes connection
//! handshakes into a bounded queue, as the kernel does for TCP, because an
//! RDMA or shm connect only completes when the listening side answers: a
//! client may connect before the server calls `accept`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::media::transport::StreamListener;
use crate::nio::socket::{Socket, Spin};
use crate::rdma::completions::GroupOffer;
use crate::sys::{self, Deadline};

/// How long an RDMA accept waits for the client's side of the handshake.
const ACCEPT_HANDSHAKE: Duration = Duration::from_secs(5);

/// Connections accepted ahead of `accept`, filled by the acceptor thread.
pub(crate) struct Backlog {
    accepted: Mutex<VecDeque<Arc<Socket>>>,
    /// Signalled when `accepted` shrinks or the listener closes.
    room: Condvar,
    limit: usize,
    /// The spin of the connections accepted (the listener's).
    spin: Spin,
    /// See `Socket::completions`.
    completions: GroupOffer,
    /// Readable while a connection waits to be taken.
    waiting: OwnedFd,
    /// Written once, by `close`: the acceptor thread ends.
    stop: OwnedFd,
    stopped: AtomicBool,
}

impl Backlog {
    /// An empty backlog of up to `limit` connections (at least one), each
    /// accepted with `spin` and offered the selector's `completions`.
    pub(crate) fn new(limit: usize, spin: Spin, completions: GroupOffer) -> Result<Backlog> {
        Ok(Backlog {
            accepted: Mutex::new(VecDeque::new()),
            room: Condvar::new(),
            limit: limit.max(1),
            spin,
            completions,
            waiting: sys::eventfd()?,
            stop: sys::eventfd()?,
            stopped: AtomicBool::new(false),
        })
    }

    /// The acceptor thread's loop: complete handshakes while there is room.
    pub(crate) fn accept_connections(&self, listener: StreamListener) {
        let addr = listener.local_addr();
        while !self.stopped.load(Ordering::Acquire) {
            {
                let mut accepted = self.accepted.lock();
                while accepted.len() >= self.limit && !self.stopped.load(Ordering::Acquire) {
                    self.room.wait(&mut accepted);
                }
            }
            let group = self.completions.current();
            let outcome = listener.try_accept(Deadline::after(Some(ACCEPT_HANDSHAKE)), group.as_ref());
            let outcome = outcome.and_then(|accepted| {
                accepted.map(|(medium, stream)| Socket::accepted(medium, stream, addr, self.spin)).transpose()
            });
            match outcome {
                Ok(Some(socket)) => {
                    let mut accepted = self.accepted.lock();
                    accepted.push_back(socket);
                    if let Err(err) = sys::signal_eventfd(&self.waiting) {
                        log::error!("listener {addr}: cannot signal an accepted connection: {err}");
                    }
                }
                Ok(None) => {
                    let [a, b, c] = listener.sources();
                    let stop = (self.stop.as_raw_fd(), libc::POLLIN);
                    if let Err(err) = sys::wait_for("accept", [a, b, c, stop], Deadline::after(None)) {
                        log::error!("listener {addr}: {err}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                // One client's failed handshake must not end the listener.
                Err(err) => log::warn!("listener {addr}: a connection failed during its handshake: {err}"),
            }
        }
    }

    /// Tells the acceptor thread to end (the caller joins it).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Err(err) = sys::signal_eventfd(&self.stop) {
            log::error!("listener close: cannot stop the acceptor: {err}");
        }
        self.room.notify_all();
    }

    /// Closes the connections accepted but never taken.
    pub(crate) fn clear(&self) {
        self.accepted.lock().clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.accepted.lock().is_empty()
    }

    /// Readable while a connection waits to be taken.
    pub(crate) fn waiting_fd(&self) -> RawFd {
        self.waiting.as_raw_fd()
    }

    /// The oldest connection accepted, if one waits.
    pub(crate) fn pop(&self) -> Result<Option<Arc<Socket>>> {
        let mut accepted = self.accepted.lock();
        let socket = accepted.pop_front();
        if accepted.is_empty() {
            sys::drain_eventfd(&self.waiting)?;
        }
        self.room.notify_all();
        Ok(socket)
    }
}
