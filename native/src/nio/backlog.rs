//! A listener's backlog: where connections wait for `accept`.
//!
//! A TCP or shm connect completes without the listening process, as a TCP
//! connect completes in the kernel before any `accept`: its connection waits
//! in the kernel (TCP's accept queue, the shm listener's handover queue), and
//! `accept` takes it in its caller's thread (`KernelBacklog`), as the JDK's
//! does. The shm handover queue is short (`net.unix.max_dgram_qlen`, 10 by
//! default), shorter than a backlog: a client that finds it full nudges the
//! listener, and a thread that sleeps until then moves handovers into a queue
//! of the listener's backlog length (`Backlog::take_overflow`), so that as
//! many clients as over TCP may connect before the server calls `accept`.
//!
//! An RDMA connect completes only when the listening side answers its
//! handshake, so a listener on RDMA has an acceptor thread that completes
//! handshakes into such a queue (`Backlog::accept_connections`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::media::shm_listener::ShmListener;
use crate::media::transport::{Medium, StreamListener};
use crate::nio::socket::{Socket, Spin};
use crate::rdma::completions::GroupOffer;
use crate::sys::{self, Deadline, WaitSource, NO_SOURCE};

/// How long an RDMA accept waits for the client's side of the handshake.
const ACCEPT_HANDSHAKE: Duration = Duration::from_secs(5);

/// How a listening socket's connections wait for `accept`.
pub(crate) enum Listening {
    /// In the kernel: `accept` takes them.
    Kernel(Box<KernelBacklog>),
    /// In a queue an acceptor thread fills, answering RDMA handshakes.
    Acceptor(BacklogThread),
}

impl Listening {
    /// Starts taking `listener`'s connections, each accepted with `spin`; a
    /// thread's queue holds up to `limit` (an acceptor's connections are
    /// offered the selector's `completions`).
    pub(crate) fn start(
        listener: StreamListener,
        limit: usize,
        spin: Spin,
        completions: GroupOffer,
    ) -> Result<Listening> {
        let addr = listener.local_addr();
        let backlog = || Backlog::new(limit, spin, completions.clone()).map(Arc::new);
        if listener.answers_handshakes() {
            let thread =
                BacklogThread::spawn(format!("rdma-nio accept {addr}"), backlog()?, move |backlog| {
                    backlog.accept_connections(&listener)
                })?;
            return Ok(Listening::Acceptor(thread));
        }
        let overflow = match listener.shm() {
            Some(shm) => {
                let shm = Arc::clone(shm);
                let name = format!("rdma-nio shm overflow {addr}");
                Some(BacklogThread::spawn(name, backlog()?, move |backlog| {
                    backlog.take_overflow(&shm, addr)
                })?)
            }
            None => None,
        };
        Ok(Listening::Kernel(Box::new(KernelBacklog {
            listener,
            stopped: false,
            overflow,
            taken: None,
            failure: None,
            maybe_waiting: true,
            spin,
        })))
    }

    /// The oldest connection waiting, if one does.
    pub(crate) fn take(&mut self) -> Result<Option<Arc<Socket>>> {
        match self {
            Listening::Kernel(kernel) => kernel.take(),
            Listening::Acceptor(acceptor) => acceptor.backlog.pop_or(|| Ok(None)),
        }
    }

    /// Whether a connection waits (see `KernelBacklog::has_waiting`).
    pub(crate) fn has_waiting(&mut self, ask_kernel: bool) -> bool {
        match self {
            Listening::Kernel(kernel) => kernel.has_waiting(ask_kernel),
            Listening::Acceptor(acceptor) => !acceptor.backlog.is_empty(),
        }
    }

    /// A selector's epoll set reported one of `sources`.
    pub(crate) fn signalled(&mut self) {
        if let Listening::Kernel(kernel) = self {
            kernel.maybe_waiting = true;
        }
    }

    /// The fds that become readable when a connection may be waiting.
    pub(crate) fn sources(&self) -> [WaitSource; 3] {
        match self {
            Listening::Kernel(kernel) => kernel.sources(),
            Listening::Acceptor(acceptor) => [acceptor.backlog.waiting_source(), NO_SOURCE, NO_SOURCE],
        }
    }

    /// Stops listening; returns the thread, if any, for the caller to join
    /// outside the socket's lock (then `clear`).
    pub(crate) fn stop(&mut self) -> Option<JoinHandle<()>> {
        match self {
            Listening::Kernel(kernel) => {
                // The ports and names are free again, and the connections
                // waiting in the kernel are reset; the fds a selector may
                // watch stay open until the socket drops.
                if let Err(err) = kernel.listener.pre_close() {
                    log::error!("listener close: {err}");
                }
                kernel.stopped = true;
                kernel.taken = None;
                kernel.overflow.as_mut().and_then(BacklogThread::stop)
            }
            Listening::Acceptor(acceptor) => acceptor.stop(),
        }
    }

    /// Closes the connections a thread accepted but nobody took.
    pub(crate) fn clear(&self) {
        let thread = match self {
            Listening::Kernel(kernel) => kernel.overflow.as_ref(),
            Listening::Acceptor(acceptor) => Some(acceptor),
        };
        if let Some(thread) = thread {
            thread.backlog.clear();
        }
    }
}

/// Connections that wait in the kernel, taken by `accept` in its caller's
/// thread. A selector's look asks the kernel only after a source signalled
/// (its fds are edge-triggered) and keeps the connection it took for `accept`.
pub(crate) struct KernelBacklog {
    listener: StreamListener,
    /// Its listener was pre-closed (see `Listening::stop`).
    stopped: bool,
    /// On shm: the handovers moved out of the kernel's short queue, older
    /// than any still in it, and the thread that moves them.
    overflow: Option<BacklogThread>,
    /// A connection a look took from the kernel, for the next `accept`.
    taken: Option<Arc<Socket>>,
    /// What a look's accept failed with, for the next `accept` to report.
    failure: Option<Error>,
    /// A source signalled since the kernel was last found empty.
    maybe_waiting: bool,
    spin: Spin,
}

impl KernelBacklog {
    /// The connection a look took, or the next one (an `accept` always asks
    /// the kernel, as the JDK's does); the failure a look met first.
    fn take(&mut self) -> Result<Option<Arc<Socket>>> {
        if let Some(err) = self.failure.take() {
            return Err(err);
        }
        match self.taken.take() {
            Some(socket) => Ok(Some(socket)),
            None => self.next(true),
        }
    }

    /// Whether a connection waits: one a look took, or the next one, which
    /// it takes now (from the kernel only when `ask_kernel` and a source
    /// signalled since the kernel was found empty). A failure counts as
    /// waiting: `accept` reports it.
    fn has_waiting(&mut self, ask_kernel: bool) -> bool {
        if self.taken.is_none() && self.failure.is_none() {
            match self.next(ask_kernel && self.maybe_waiting) {
                Ok(taken) => self.taken = taken,
                Err(err) => self.failure = Some(err),
            }
        }
        self.taken.is_some() || self.failure.is_some()
    }

    /// The oldest connection the overflow thread moved, else one from the
    /// kernel if `ask_kernel`.
    fn next(&mut self, ask_kernel: bool) -> Result<Option<Arc<Socket>>> {
        let KernelBacklog { listener, overflow, maybe_waiting, spin, stopped, .. } = self;
        if *stopped {
            return Err(Error::Closed("accept"));
        }
        let mut from_kernel = || {
            if !ask_kernel {
                return Ok(None);
            }
            let Some((medium, stream)) = listener.try_accept_queued()? else {
                *maybe_waiting = false;
                return Ok(None);
            };
            Socket::accepted(medium, stream, listener.local_addr(), *spin).map(Some)
        };
        match overflow {
            Some(overflow) => overflow.backlog.pop_or(from_kernel),
            None => from_kernel(),
        }
    }

    /// The listener's (no RDMA there), the first replaced by the overflow's.
    fn sources(&self) -> [WaitSource; 3] {
        if self.stopped {
            return [NO_SOURCE; 3];
        }
        let [_, shm, tcp] = self.listener.sources();
        [self.overflow.as_ref().map_or(NO_SOURCE, |o| o.backlog.waiting_source()), shm, tcp]
    }
}

/// A thread that fills a backlog, and the backlog.
pub(crate) struct BacklogThread {
    backlog: Arc<Backlog>,
    thread: Option<JoinHandle<()>>,
}

impl BacklogThread {
    fn spawn(
        name: String,
        backlog: Arc<Backlog>,
        fill: impl FnOnce(&Backlog) + Send + 'static,
    ) -> Result<BacklogThread> {
        let filled = Arc::clone(&backlog);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || fill(&filled))
            .map_err(|source| Error::Os { op: "spawn(backlog thread)", source })?;
        Ok(BacklogThread { backlog, thread: Some(thread) })
    }

    /// Tells the thread to end; returns it for the caller to join.
    fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.backlog.stop();
        self.thread.take()
    }
}

impl Drop for BacklogThread {
    /// A listener dropped without a close: its thread ends (unjoined) and
    /// lets the listener go.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.backlog.stop();
        }
    }
}

/// Connections accepted ahead of `accept`, filled by a thread.
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
    /// Written once, by `close`: the thread ends.
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
    fn accept_connections(&self, listener: &StreamListener) {
        let addr = listener.local_addr();
        while self.wait_for_room() {
            let group = self.completions.current();
            let outcome = listener.try_accept(Deadline::after(Some(ACCEPT_HANDSHAKE)), group.as_ref());
            let outcome = outcome.and_then(|accepted| {
                accepted.map(|(medium, stream)| Socket::accepted(medium, stream, addr, self.spin)).transpose()
            });
            match outcome {
                Ok(Some(socket)) => self.push(addr, socket),
                Ok(None) => {
                    let [a, b, c] = listener.sources();
                    self.sleep(addr, "accept", [a, b, c]);
                }
                // One client's failed handshake must not end the listener.
                Err(err) => log::warn!("listener {addr}: a connection failed during its handshake: {err}"),
            }
        }
    }

    /// The shm overflow thread's loop: asleep until a client finds the
    /// handover queue full, then moves handovers here while there is room.
    fn take_overflow(&self, shm: &ShmListener, addr: SocketAddr) {
        loop {
            self.sleep(addr, "shm overflow", [(shm.overflow_fd(), libc::POLLIN)]);
            shm.take_nudges();
            loop {
                if !self.wait_for_room() {
                    return;
                }
                // Under the lock, so that an accept that finds the queue empty
                // cannot take a later handover from the kernel before this one.
                let mut accepted = self.accepted.lock();
                let Some(stream) = shm.try_take() else { break };
                match Socket::accepted(Medium::Shm, Box::new(stream), addr, self.spin) {
                    Ok(socket) => {
                        accepted.push_back(socket);
                        self.signal_waiting(addr);
                    }
                    Err(err) => log::warn!("listener {addr}: a shm connection failed: {err}"),
                }
            }
        }
    }

    /// Waits until there is room: false once stopped.
    fn wait_for_room(&self) -> bool {
        let mut accepted = self.accepted.lock();
        while accepted.len() >= self.limit && !self.stopped.load(Ordering::Acquire) {
            self.room.wait(&mut accepted);
        }
        !self.stopped.load(Ordering::Acquire)
    }

    fn push(&self, addr: SocketAddr, socket: Arc<Socket>) {
        let mut accepted = self.accepted.lock();
        accepted.push_back(socket);
        self.signal_waiting(addr);
    }

    /// Under the lock, as `pop_or` drains it: `waiting` is readable exactly
    /// while a connection waits (a blocking accept sleeps on it, level-triggered).
    fn signal_waiting(&self, addr: SocketAddr) {
        if let Err(err) = sys::signal_eventfd(&self.waiting) {
            log::error!("listener {addr}: cannot signal an accepted connection: {err}");
        }
    }

    /// Sleeps until one of `sources` (at most three) or the stop signal is readable.
    fn sleep<const N: usize>(&self, addr: SocketAddr, op: &'static str, sources: [WaitSource; N]) {
        let stop = (self.stop.as_raw_fd(), libc::POLLIN);
        let mut fds = [stop; 4];
        fds[..N].copy_from_slice(&sources);
        if let Err(err) = sys::wait_for(op, fds, Deadline::after(None)) {
            log::error!("listener {addr}: {err}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Tells the thread to end (the caller joins it).
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Err(err) = sys::signal_eventfd(&self.stop) {
            log::error!("listener close: cannot stop its thread: {err}");
        }
        self.room.notify_all();
    }

    /// Closes the connections accepted but never taken.
    fn clear(&self) {
        self.accepted.lock().clear();
    }

    fn is_empty(&self) -> bool {
        self.accepted.lock().is_empty()
    }

    /// Readable while a connection waits to be taken.
    fn waiting_source(&self) -> WaitSource {
        (self.waiting.as_raw_fd(), libc::POLLIN)
    }

    /// The oldest connection accepted, else what `otherwise` gives, which
    /// runs under the lock that `take_overflow` moves a handover under.
    fn pop_or(&self, otherwise: impl FnOnce() -> Result<Option<Arc<Socket>>>) -> Result<Option<Arc<Socket>>> {
        let mut accepted = self.accepted.lock();
        let Some(socket) = accepted.pop_front() else { return otherwise() };
        if accepted.is_empty() {
            sys::drain_eventfd(&self.waiting)?;
        }
        self.room.notify_all();
        Ok(Some(socket))
    }
}
