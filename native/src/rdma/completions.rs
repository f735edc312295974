//! Completion queues and the routing of their completions to connections.
//!
//! A queue pair's CQ is fixed when it is created, and NIO usually connects or
//! accepts a channel before any selector sees it (and may move it between
//! selectors, or use it from a blocking thread). So the queue a connection
//! gets is chosen when its queue pair is made, and every queue works the same
//! whoever waits:
//!
//! - A connection accepted by a listener that is registered with a selector,
//!   or made by a socket registered with one before its queue pair was (a
//!   non-blocking connect), gets a seat at that selector's queue (its
//!   `CompletionGroup`, offered through a `GroupOffer`): the selector's event
//!   loop then has one CQ for its connections, whose channel is in its epoll
//!   set next to the TCP fds and eventfds.
//!   Any other connection gets a queue of its own (a queue with one seat):
//!   one queue shared by independent sleeping threads would wake them all on
//!   every completion, or cost a thread hop to hand completions over.
//! - Whoever polls a queue takes every completion there is: its own ones go
//!   straight to it, the others into their seats' inboxes (by queue pair
//!   number). A seat's inbox is emptied before the queue is polled for it,
//!   under one lock, so a connection sees its completions in order.
//! - A connection waited for *arms* its seat, then is asked once more (a
//!   completion that landed before the arming raises no signal). A completion
//!   routed into an armed seat disarms it and wakes its waiter: by writing the
//!   seat's eventfd, or, when the router is the seat's only watcher (its
//!   selector, or its sleeping thread), by telling it directly, which saves
//!   the eventfd's write, collection and read on every wake-up. Completions
//!   that the connection's own thread takes while others wait for the seat
//!   wake them too (by eventfd): a write polls for its sends and so takes in
//!   the receives that made the connection readable.
//! - Whoever waits for armed seats watches the queue's `CompletionChannel`
//!   too: a selector routes a group's queue whenever it collects signals, and
//!   a thread about to block arms the queue (`sleep_begins`: armed, then
//!   everything routed) and sleeps on the channel's fd; on waking it takes the
//!   channel's events and routes (`sleep_ends`), re-arming the queue for those
//!   still asleep. While every waiter spins, a group's queue is never armed.
//!   A connection's own queue is armed with its seat, as a connection's CQ
//!   always was: a selector with many idle connections of their own learns
//!   of their completions from epoll alone, instead of routing every queue.
//!
//! Each seat reserves the completions its queue pair can have outstanding (its
//! send and receive depth, or for a shared receive queue the credits it grants
//! its peer), so a queue never overflows; a full shared queue grows
//! (`ibv_resize_cq`) up to the device's limit, and past that the group makes
//! another. A leaving seat (its queue pair destroyed) takes the completions
//! still queued for it out of the queue, so a later queue pair that gets the
//! same number never sees them. A queue goes with its last seat and group.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::rdma::verbs::{Completion, CompletionQueue, Device, POLL_BATCH};
use crate::sys;

/// The size a group's queue starts with (it grows as seats are taken).
const GROUP_INITIAL_ENTRIES: u32 = 1024;

/// Completion queues alive in the process (for tests and diagnostics).
static LIVE_QUEUES: AtomicUsize = AtomicUsize::new(0);

/// How many completion queues the process has (for tests and diagnostics).
pub fn completion_queues() -> usize {
    LIVE_QUEUES.load(Ordering::Relaxed)
}

/// One completion queue and the routing of its completions to seats.
struct SharedCq {
    /// The device context, as an address: a group finds its queues by it.
    device: Device,
    cq: CompletionQueue,
    /// One connection's own queue, not a group's. It is armed whenever its
    /// seat is, as a connection's CQ always was: then a selector that watches
    /// many such queues learns of their completions from epoll alone. A
    /// group's queue is armed only by sleepers, and its selector routes it on
    /// every collect instead: arming it for its idle seats would raise an
    /// event for every completion of its busy ones.
    private: bool,
    router: Mutex<Router>,
}

// SAFETY: every call on the queue (poll, arm, resize, taking channel events)
// is made with `router` locked; reading the channel's fd needs no lock.
unsafe impl Sync for SharedCq {}

/// The queues of one event loop (a selector), one per device (more when one
/// is full): the connections that its registered sockets accept or make
/// share them (see `GroupOffer`).
#[derive(Default)]
pub(crate) struct CompletionGroup {
    queues: Mutex<Vec<Arc<SharedCq>>>,
}

/// The group a selector offers the sockets it registers: a listener's
/// accepted connections, and a socket's own connection if its queue pair is
/// made while it is registered (a non-blocking connect), join it. Read when a
/// queue pair is made; later registrations change nothing for that one.
#[derive(Clone, Default)]
pub(crate) struct GroupOffer(Arc<Mutex<Option<Arc<CompletionGroup>>>>);

impl GroupOffer {
    pub(crate) fn offer(&self, group: &Arc<CompletionGroup>) {
        *self.0.lock() = Some(Arc::clone(group));
    }

    /// Withdraws `group`, if it is still the one offered.
    pub(crate) fn withdraw(&self, group: &Arc<CompletionGroup>) {
        let mut offered = self.0.lock();
        if offered.as_ref().is_some_and(|offered| Arc::ptr_eq(offered, group)) {
            *offered = None;
        }
    }

    pub(crate) fn current(&self) -> Option<Arc<CompletionGroup>> {
        self.0.lock().clone()
    }
}

/// A connection's seat at a completion queue.
pub(crate) struct Completions {
    queue: Arc<SharedCq>,
    seat: usize,
    signal: Arc<OwnedFd>,
}

/// A completion queue's channel, as a waiter sees it: whoever waits for armed
/// seats of the queue watches its fd and calls the methods below. A seat's own
/// view of it (`Completions::channel`) knows the seat.
#[derive(Clone)]
pub struct CompletionChannel {
    queue: Arc<SharedCq>,
    seat: Option<usize>,
}

/// A selector, as the seats it watches know it: routing on its behalf tells
/// it directly which of its slots woke, instead of writing their eventfds.
pub(crate) struct Watcher<'a> {
    pub id: usize,
    pub woken: &'a mut Vec<usize>,
    /// An eventfd was written meanwhile (the watcher may be one of its waiters).
    pub wrote: bool,
}

/// Who is routing, and so needs no eventfd written to learn of a wake-up.
enum Awake<'a, 'b> {
    Nobody,
    /// The seat's own waiter.
    Seat(usize),
    /// A selector that watches seats.
    Watcher(&'a mut Watcher<'b>),
}

impl CompletionGroup {
    /// A seat for `entries` completions at the group's queue for `context`'s device.
    fn join(&self, device: Device, entries: u32, signal: &Arc<OwnedFd>) -> Result<Completions> {
        let mut queues = self.queues.lock();
        for queue in queues.iter().filter(|queue| queue.device == device) {
            if let Some(seat) = queue.seat(entries, signal)? {
                return Ok(Completions { queue: Arc::clone(queue), seat, signal: Arc::clone(signal) });
            }
        }
        let queue = SharedCq::new(device, entries, GROUP_INITIAL_ENTRIES, false)?;
        let seat = queue.seat(entries, signal)?.expect("a new queue has room for what its device allows");
        queues.push(Arc::clone(&queue));
        Ok(Completions { queue, seat, signal: Arc::clone(signal) })
    }
}

impl Completions {
    /// Takes a seat for a queue pair that can have `entries` completions
    /// outstanding: at `group`'s queue for the device, or at a queue of its own.
    pub(crate) fn join(group: Option<&CompletionGroup>, device: Device, entries: u32) -> Result<Completions> {
        let signal = Arc::new(sys::eventfd()?);
        match group {
            Some(group) => group.join(device, entries, &signal),
            None => {
                let queue = SharedCq::new(device, entries, entries, true)?;
                let seat = queue.seat(entries, &signal)?.expect("a new queue has room for its one seat");
                Ok(Completions { queue, seat, signal })
            }
        }
    }

    /// The queue to create the queue pair with.
    pub(crate) fn queue(&self) -> &CompletionQueue {
        &self.queue.cq
    }

    /// Routes the completions of queue pair `qp_num` to this seat (once, right
    /// after the queue pair is created, before anything is posted on it).
    pub(crate) fn bind(&self, qp_num: u32) -> Result<()> {
        self.queue.router.lock().bind(self.seat, qp_num, |wcs| self.queue.cq.poll(wcs))
    }

    /// Moves up to `out.len()` of this seat's completions into `out`, routing
    /// the others that it meets on the way; returns how many.
    pub(crate) fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let mut router = self.queue.router.lock();
        router.poll(self.seat, out, |wcs| self.queue.cq.poll(wcs))
    }

    /// Asks to be woken when a completion for this seat is routed. The caller
    /// polls once more before it waits, and whoever waits watches `channel` too.
    /// A queue of its own is armed with its seat (see `SharedCq::private`).
    pub(crate) fn arm(&self) -> Result<()> {
        let mut router = self.queue.router.lock();
        router.seat(self.seat).armed = true;
        if self.queue.private {
            router.arm_queue(&self.queue.cq)?;
        }
        Ok(())
    }

    /// Ends an arming: consumes the signal, if one was written.
    pub(crate) fn disarm(&self) -> Result<()> {
        if self.queue.router.lock().disarm(self.seat) {
            sys::drain_eventfd(&self.signal)?;
        }
        Ok(())
    }

    /// The fd that becomes readable when a completion is routed to the armed seat.
    pub(crate) fn signal_fd(&self) -> RawFd {
        self.signal.as_raw_fd()
    }

    /// The seat's view of its queue's channel.
    pub(crate) fn channel(&self) -> CompletionChannel {
        CompletionChannel { queue: Arc::clone(&self.queue), seat: Some(self.seat) }
    }
}

impl Drop for Completions {
    /// Leaves the seat; the queue pair must be gone by now.
    fn drop(&mut self) {
        let mut router = self.queue.router.lock();
        if let Err(err) = router.leave(self.seat, |wcs| self.queue.cq.poll(wcs)) {
            log::error!("leaving a completion queue: {err}");
        }
    }
}

impl CompletionChannel {
    /// Readable when the queue, once armed (by a sleeper, or for a private
    /// queue with its seat), received a completion.
    pub(crate) fn fd(&self) -> RawFd {
        self.queue.cq.event_fd()
    }

    /// Whether the queue is one connection's own: it is armed whenever its
    /// seat is, and so needs no routing by its watchers until its fd is readable.
    pub(crate) fn is_private(&self) -> bool {
        self.queue.private
    }

    /// Whether both are the same queue's.
    pub(crate) fn same_as(&self, other: &CompletionChannel) -> bool {
        Arc::ptr_eq(&self.queue, &other.queue)
    }

    /// The queue's channel as a waiter for many seats holds it (a selector).
    pub(crate) fn of_queue(&self) -> CompletionChannel {
        CompletionChannel { queue: Arc::clone(&self.queue), seat: None }
    }

    /// This seat is watched by `watcher` (a selector), under `slot`.
    pub(crate) fn watch(&self, watcher: usize, slot: usize) {
        if let Some(seat) = self.seat {
            let mut router = self.queue.router.lock();
            let seat = router.seat(seat);
            seat.watchers += 1;
            seat.watched_as = Some((watcher, slot));
        }
    }

    /// `watcher` no longer watches this seat.
    pub(crate) fn unwatch(&self, watcher: usize) {
        if let Some(seat) = self.seat {
            let mut router = self.queue.router.lock();
            let seat = router.seat(seat);
            seat.watchers -= 1;
            if seat.watched_as.is_some_and(|(id, _)| id == watcher) {
                seat.watched_as = None;
            }
        }
    }

    /// Routes every completion the queue holds, for `watcher` (no syscall
    /// unless an armed seat that others watch gets one): what a selector does
    /// whenever it collects signals.
    pub(crate) fn route(&self, watcher: &mut Watcher) -> Result<()> {
        self.queue.router.lock().route_all(&self.queue.cq, &mut Awake::Watcher(watcher))
    }

    /// Before blocking on `fd` (and on the signals of the armed seats one
    /// waits for): arms the queue, then routes what landed before the arming,
    /// signalling by eventfd (so that the sleep about to begin ends at once).
    /// Must be followed by `sleep_ends`, however the sleep ends. With a seat
    /// (a thread that sleeps for its own connection), the seat is watched
    /// meanwhile.
    pub(crate) fn sleep_begins(&self) -> Result<()> {
        let mut router = self.queue.router.lock();
        router.arm_queue(&self.queue.cq)?;
        router.route_all(&self.queue.cq, &mut Awake::Nobody)?;
        router.sleepers += 1;
        if let Some(seat) = self.seat {
            router.seat(seat).watchers += 1;
        }
        Ok(())
    }

    /// A thread's sleep for its own seat: `wait` blocks on the channel's fd
    /// (given) and the thread's own fds, bracketed by `sleep_begins` and
    /// `sleep_ends` however it ends.
    pub(crate) fn sleep_through<T>(&self, wait: impl FnOnce(RawFd) -> Result<T>) -> Result<T> {
        self.sleep_begins()?;
        let woke = wait(self.fd());
        self.sleep_ends(None)?;
        woke
    }

    /// After blocking: see `take_events`.
    pub(crate) fn sleep_ends(&self, watcher: Option<&mut Watcher>) -> Result<()> {
        let mut router = self.queue.router.lock();
        router.sleepers -= 1;
        if let Some(seat) = self.seat {
            router.seat(seat).watchers -= 1;
        }
        router.take_events(&self.queue.cq, self.queue.private, self.awake(watcher))
    }

    /// Takes the channel's events (its fd stops being readable), routes what
    /// arrived, and arms the queue again while someone still waits on it.
    pub(crate) fn take_events(&self, watcher: &mut Watcher) -> Result<()> {
        self.queue.router.lock().take_events(&self.queue.cq, self.queue.private, Awake::Watcher(watcher))
    }

    fn awake<'a, 'b>(&self, watcher: Option<&'a mut Watcher<'b>>) -> Awake<'a, 'b> {
        match (watcher, self.seat) {
            (Some(watcher), _) => Awake::Watcher(watcher),
            (None, Some(seat)) => Awake::Seat(seat),
            (None, None) => Awake::Nobody,
        }
    }
}

impl SharedCq {
    /// A queue of about `size` entries, at least the `needed` ones.
    fn new(device: Device, needed: u32, size: u32, private: bool) -> Result<Arc<SharedCq>> {
        let max = device.max_cq_entries()?;
        if needed > max {
            return Err(Error::InvalidArgument(format!(
                "a queue pair with {needed} outstanding completions: the device's queues hold {max}"
            )));
        }
        let cq = CompletionQueue::new(device, size.clamp(needed, max) as i32)?;
        let mut router = Router::new(max);
        router.capacity = cq.capacity();
        LIVE_QUEUES.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(SharedCq { device, cq, private, router: Mutex::new(router) }))
    }

    /// A seat for `entries` completions, if the queue has or can make room.
    fn seat(&self, entries: u32, signal: &Arc<OwnedFd>) -> Result<Option<usize>> {
        let mut router = self.router.lock();
        let wanted = router.reserved + entries;
        if wanted > router.capacity {
            if wanted > router.max {
                return Ok(None);
            }
            let grown = (router.capacity * 2).clamp(wanted, router.max);
            if let Err(err) = self.cq.resize(grown) {
                log::debug!("completion queue not grown to {grown} entries ({err}): another one is made");
                return Ok(None);
            }
            router.capacity = self.cq.capacity();
        }
        Ok(Some(router.take_seat(entries, Arc::clone(signal))))
    }
}

impl Drop for SharedCq {
    fn drop(&mut self) {
        LIVE_QUEUES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The seats at one queue and their inboxes. Independent of the queue itself
/// (it polls through a function), so that its routing is tested on the host.
struct Router {
    seats: Vec<Option<Seat>>,
    free: Vec<usize>,
    by_qp: HashMap<u32, usize>,
    /// Entries the queue has, reserved by seats, and the device's limit.
    capacity: u32,
    reserved: u32,
    max: u32,
    /// Threads blocked on the queue's channel (between `sleep_begins` and `sleep_ends`).
    sleepers: usize,
    /// The queue is armed and its event not yet taken.
    cq_armed: bool,
}

struct Seat {
    qp_num: Option<u32>,
    entries: u32,
    inbox: VecDeque<Completion>,
    armed: bool,
    /// `signal` was written since the seat was last disarmed.
    signalled: bool,
    signal: Arc<OwnedFd>,
    /// Selectors that registered the seat's socket, and threads asleep on it.
    watchers: u32,
    /// The last selector that registered it, and under which slot.
    watched_as: Option<(usize, usize)>,
}

impl Router {
    fn new(max: u32) -> Router {
        Router {
            seats: Vec::new(),
            free: Vec::new(),
            by_qp: HashMap::new(),
            capacity: 0,
            reserved: 0,
            max,
            sleepers: 0,
            cq_armed: false,
        }
    }

    fn take_seat(&mut self, entries: u32, signal: Arc<OwnedFd>) -> usize {
        self.reserved += entries;
        let seat = Seat {
            qp_num: None,
            entries,
            // Room for everything the queue pair can have outstanding: routing never allocates.
            inbox: VecDeque::with_capacity(entries as usize),
            armed: false,
            signalled: false,
            signal,
            watchers: 0,
            watched_as: None,
        };
        match self.free.pop() {
            Some(index) => {
                self.seats[index] = Some(seat);
                index
            }
            None => {
                self.seats.push(Some(seat));
                self.seats.len() - 1
            }
        }
    }

    fn seat(&mut self, index: usize) -> &mut Seat {
        self.seats[index].as_mut().expect("a seat is taken until its owner leaves")
    }

    fn bind(
        &mut self,
        index: usize,
        qp_num: u32,
        poll_cq: impl FnMut(&mut [Completion]) -> Result<usize>,
    ) -> Result<()> {
        if self.by_qp.contains_key(&qp_num) {
            // A destroyed queue pair's number, reused before its seat left:
            // what is queued under it is the old one's, and goes to the old seat.
            self.route_queue(&mut Awake::Nobody, None, &mut [], poll_cq)?;
        }
        self.seat(index).qp_num = Some(qp_num);
        self.by_qp.insert(qp_num, index);
        Ok(())
    }

    /// Disarms a seat; true when its signal was written and must be consumed.
    fn disarm(&mut self, index: usize) -> bool {
        let seat = self.seat(index);
        seat.armed = false;
        mem::replace(&mut seat.signalled, false)
    }

    /// Arms the queue unless it is armed already; true when it armed it now.
    fn arm_queue(&mut self, cq: &CompletionQueue) -> Result<bool> {
        if self.cq_armed {
            return Ok(false);
        }
        cq.arm()?;
        self.cq_armed = true;
        Ok(true)
    }

    /// Routes everything the queue holds.
    fn route_all(&mut self, cq: &CompletionQueue, awake: &mut Awake) -> Result<()> {
        self.route_queue(awake, None, &mut [], |wcs| cq.poll(wcs)).map(drop)
    }

    /// See `CompletionChannel::take_events`; a `private` queue waits for its
    /// seat's arming too.
    fn take_events(&mut self, cq: &CompletionQueue, private: bool, mut awake: Awake) -> Result<()> {
        while cq.consume_event()? {
            self.cq_armed = false;
        }
        self.route_all(cq, &mut awake)?;
        // A private queue's seat still armed waits for the next completion if
        // a selector watches it. Its own thread, awake now, arms anew if it
        // sleeps again: arming for it now would raise an event nobody waits for.
        let seat_waits = private && self.seats.iter().flatten().any(|seat| seat.armed && seat.watchers > 0);
        let waited_for = self.sleepers > 0 || seat_waits;
        if waited_for && self.arm_queue(cq)? {
            // What landed before the arming raises no event.
            self.route_all(cq, &mut awake)?;
        }
        Ok(())
    }

    /// Fills `out` for seat `own`: from its inbox, then from the queue.
    fn poll(
        &mut self,
        own: usize,
        out: &mut [Completion],
        poll_cq: impl FnMut(&mut [Completion]) -> Result<usize>,
    ) -> Result<usize> {
        let mut taken = 0;
        let inbox = &mut self.seat(own).inbox;
        while taken < out.len() {
            let Some(wc) = inbox.pop_front() else { break };
            out[taken] = wc;
            taken += 1;
        }
        if taken < out.len() {
            let qp_num = self.seat(own).qp_num;
            taken += self.route_queue(&mut Awake::Seat(own), qp_num, &mut out[taken..], poll_cq)?;
        }
        if taken > 0 {
            self.took_in(own)?;
        }
        Ok(taken)
    }

    /// The seat's own thread took completions in while others wait for the
    /// seat (the selector that armed it, a thread asleep on it). What it took
    /// may have made the connection ready (a write that polls for its sends
    /// takes the receives in too), and nothing else would tell them: a
    /// completion signals once, whoever takes it.
    fn took_in(&mut self, own: usize) -> Result<()> {
        let seat = self.seat(own);
        if seat.armed && seat.watchers > 0 {
            seat.armed = false;
            seat.signalled = true;
            sys::signal_eventfd(&seat.signal)?;
        }
        Ok(())
    }

    /// Polls the queue until it is empty or `out` is full; the completions of
    /// queue pair `own_qp` go to `out` while it has room, every other one is
    /// routed. Returns how many went to `out`.
    fn route_queue(
        &mut self,
        awake: &mut Awake,
        own_qp: Option<u32>,
        out: &mut [Completion],
        mut poll_cq: impl FnMut(&mut [Completion]) -> Result<usize>,
    ) -> Result<usize> {
        let mut taken = 0;
        let mut batch = [Completion::default(); POLL_BATCH];
        loop {
            let n = poll_cq(&mut batch)?;
            for wc in &batch[..n] {
                if own_qp == Some(wc.qp_num) && taken < out.len() {
                    out[taken] = *wc;
                    taken += 1;
                } else {
                    self.route(*wc, awake)?;
                }
            }
            if n < POLL_BATCH || (!out.is_empty() && taken == out.len()) {
                return Ok(taken);
            }
        }
    }

    /// Puts `wc` into its seat's inbox and, if the seat is armed, wakes its
    /// waiter: directly when that is who routes (see `Awake`), else by its eventfd.
    fn route(&mut self, wc: Completion, awake: &mut Awake) -> Result<()> {
        let Some(&index) = self.by_qp.get(&wc.qp_num) else {
            log::debug!("completion for queue pair {} dropped: it has left", wc.qp_num);
            return Ok(());
        };
        let seat = self.seat(index);
        seat.inbox.push_back(wc);
        // The seat's own thread routes: it is awake and takes its inbox next
        // (the seat stays armed for whoever else waits for it).
        if !seat.armed || matches!(awake, Awake::Seat(own) if *own == index) {
            return Ok(());
        }
        seat.armed = false;
        match awake {
            Awake::Watcher(watcher)
                if seat.watchers == 1 && seat.watched_as.is_some_and(|(id, _)| id == watcher.id) =>
            {
                watcher.woken.push(seat.watched_as.expect("checked").1);
            }
            other => {
                if let Awake::Watcher(watcher) = other {
                    watcher.wrote = true;
                }
                seat.signalled = true;
                sys::signal_eventfd(&seat.signal)?;
            }
        }
        Ok(())
    }

    /// Gives a seat up, after its queue pair was destroyed: its completions
    /// still queued are taken out, routing the others met on the way.
    fn leave(&mut self, index: usize, poll_cq: impl FnMut(&mut [Completion]) -> Result<usize>) -> Result<()> {
        self.disarm(index);
        let seat = self.seats[index].take().expect("a seat is left once");
        // (A queue pair made since may have the same number and a seat of its own.)
        if let Some(qp_num) = seat.qp_num {
            if self.by_qp.get(&qp_num) == Some(&index) {
                self.by_qp.remove(&qp_num);
            }
        }
        self.reserved -= seat.entries;
        self.free.push(index);
        self.route_queue(&mut Awake::Nobody, None, &mut [], poll_cq).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Deadline;
    use std::time::Duration;

    fn wc(qp_num: u32, wr_id: u64) -> Completion {
        Completion::success(qp_num, wr_id)
    }

    /// A router with one bound seat per queue pair number, and their signals.
    fn router_with(qp_nums: &[u32]) -> (Router, Vec<Arc<OwnedFd>>) {
        let mut router = Router::new(1 << 15);
        router.capacity = 1 << 15;
        let signals: Vec<_> = qp_nums.iter().map(|_| Arc::new(sys::eventfd().unwrap())).collect();
        for (&qp_num, signal) in qp_nums.iter().zip(&signals) {
            let seat = router.take_seat(8, Arc::clone(signal));
            router.bind(seat, qp_num, queue(&mut VecDeque::new())).unwrap();
        }
        (router, signals)
    }

    /// A queue that hands out `queued` in order, a batch at a time.
    fn queue(queued: &mut VecDeque<Completion>) -> impl FnMut(&mut [Completion]) -> Result<usize> + '_ {
        move |wcs| {
            let n = wcs.len().min(queued.len());
            for slot in &mut wcs[..n] {
                *slot = queued.pop_front().unwrap();
            }
            Ok(n)
        }
    }

    fn poll_ids(
        router: &mut Router,
        seat: usize,
        queued: &mut VecDeque<Completion>,
        room: usize,
    ) -> Vec<u64> {
        let mut out: Vec<Completion> = (0..room).map(|_| wc(0, 0)).collect();
        let n = router.poll(seat, &mut out, queue(queued)).unwrap();
        out[..n].iter().map(|wc| wc.wr_id).collect()
    }

    fn readable(fd: &OwnedFd) -> bool {
        sys::wait_readable("test", [fd.as_raw_fd()], Deadline::after(Some(Duration::ZERO))).is_ok()
    }

    #[test]
    fn completions_polled_by_another_seat_reach_theirs_in_order() {
        let (mut router, _) = router_with(&[10, 20]);
        let mut queued: VecDeque<_> = [wc(10, 1), wc(20, 1), wc(10, 2), wc(20, 2)].into();
        assert_eq!(poll_ids(&mut router, 1, &mut queued, 16), [1, 2], "seat 1 (qp 20) gets its own");
        queued.push_back(wc(10, 3));
        // Seat 0's earlier completions wait in its inbox and come before the queued one.
        assert_eq!(poll_ids(&mut router, 0, &mut queued, 16), [1, 2, 3]);
        assert!(queued.is_empty());
    }

    #[test]
    fn a_poll_takes_no_more_than_its_room_and_keeps_the_order() {
        let (mut router, _) = router_with(&[7]);
        let mut queued: VecDeque<_> = (0..40).map(|id| wc(7, id)).collect();
        let mut seen = Vec::new();
        loop {
            let ids = poll_ids(&mut router, 0, &mut queued, 3);
            if ids.is_empty() {
                break;
            }
            assert!(ids.len() <= 3);
            seen.extend(ids);
        }
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn an_armed_seat_is_signalled_once_and_disarmed() {
        let (mut router, signals) = router_with(&[1, 2]);
        router.seat(0).armed = true;
        let mut queued: VecDeque<_> = [wc(2, 1)].into();
        poll_ids(&mut router, 1, &mut queued, 16);
        assert!(!readable(&signals[0]), "only a completion for the seat signals it");

        queued.extend([wc(1, 1), wc(1, 2)]);
        router.route_queue(&mut Awake::Nobody, None, &mut [], queue(&mut queued)).unwrap();
        assert!(readable(&signals[0]), "the armed seat's completion signals it");
        assert!(!router.seat(0).armed, "a signalled seat is no longer armed");
        assert!(router.disarm(0), "the signal must be consumed");
        assert!(!router.disarm(0), "and only once");
        assert_eq!(poll_ids(&mut router, 0, &mut queued, 16), [1, 2], "nothing is lost to the pump");
    }

    #[test]
    fn a_seat_that_routes_for_itself_is_not_signalled_but_the_others_are() {
        let (mut router, signals) = router_with(&[1, 2]);
        router.seat(0).armed = true;
        router.seat(1).armed = true;
        let mut queued: VecDeque<_> = [wc(1, 1), wc(2, 1)].into();
        router.route_queue(&mut Awake::Seat(0), None, &mut [], queue(&mut queued)).unwrap();
        assert!(!readable(&signals[0]), "the seat whose owner routes is awake");
        assert!(readable(&signals[1]), "the other armed seat is signalled");
        assert_eq!(poll_ids(&mut router, 0, &mut queued, 16), [1]);
    }

    #[test]
    fn a_selector_that_alone_watches_a_seat_is_told_directly_others_by_eventfd() {
        let (mut router, signals) = router_with(&[1, 2]);
        for index in 0..2 {
            let seat = router.seat(index);
            seat.armed = true;
            seat.watchers = 1;
            seat.watched_as = Some((7, 30 + index));
        }
        router.seat(1).watchers = 2; // also registered with another selector
        let mut woken = Vec::new();
        let mut watcher = Watcher { id: 7, woken: &mut woken, wrote: false };
        let mut queued: VecDeque<_> = [wc(1, 1), wc(2, 1)].into();
        router.route_queue(&mut Awake::Watcher(&mut watcher), None, &mut [], queue(&mut queued)).unwrap();
        assert!(watcher.wrote, "the seat that another selector watches too is signalled");
        assert_eq!(woken, [30], "the seat only this selector watches is reported by its slot");
        assert!(!readable(&signals[0]));
        assert!(readable(&signals[1]));
        assert!(!router.disarm(0), "no signal to consume");
        assert!(router.disarm(1));
    }

    #[test]
    fn a_leaving_seat_takes_its_queued_completions_along() {
        let (mut router, _) = router_with(&[5, 6]);
        let mut queued: VecDeque<_> = [wc(5, 1), wc(6, 1), wc(5, 2)].into();
        router.leave(0, queue(&mut queued)).unwrap();
        assert!(queued.is_empty());
        assert_eq!(router.reserved, 8, "the seat's entries are given back");
        // A new queue pair with the same number takes the free seat and sees nothing old.
        let seat = router.take_seat(8, Arc::new(sys::eventfd().unwrap()));
        assert_eq!(seat, 0, "the seat is reused");
        router.bind(seat, 5, queue(&mut queued)).unwrap();
        assert_eq!(poll_ids(&mut router, seat, &mut queued, 16), Vec::<u64>::new());
        assert_eq!(poll_ids(&mut router, 1, &mut queued, 16), [1], "the other seat's completion was kept");
    }

    #[test]
    fn a_queue_pair_number_reused_before_the_old_seat_leaves_reaches_only_the_new_seat() {
        let (mut router, _) = router_with(&[5]);
        // Queue pair 5 was destroyed with a completion still queued; a new one gets number 5.
        let mut queued: VecDeque<_> = [wc(5, 1)].into();
        let seat = router.take_seat(8, Arc::new(sys::eventfd().unwrap()));
        router.bind(seat, 5, queue(&mut queued)).unwrap();
        queued.push_back(wc(5, 2));
        router.leave(0, queue(&mut queued)).unwrap();
        assert_eq!(
            poll_ids(&mut router, seat, &mut queued, 16),
            [2],
            "the new queue pair's, not the old one's"
        );
    }

    #[test]
    fn a_seat_whose_own_thread_takes_completions_in_signals_its_other_waiters() {
        let (mut router, signals) = router_with(&[1, 2]);
        // Seat 0: armed by a selector that watches it. Seat 1: armed by its own thread, before it sleeps.
        router.seat(0).armed = true;
        router.seat(0).watchers = 1;
        router.seat(1).armed = true;
        let mut queued: VecDeque<_> = [wc(1, 1)].into();
        assert_eq!(poll_ids(&mut router, 0, &mut queued, 16), [1]);
        assert!(readable(&signals[0]), "the selector must learn of what another thread took in");
        assert!(router.disarm(0));
        queued.push_back(wc(2, 1));
        assert_eq!(poll_ids(&mut router, 1, &mut queued, 16), [1]);
        assert!(!readable(&signals[1]), "a thread that polls for itself signals no one");
    }

    #[test]
    fn completions_of_unknown_queue_pairs_are_dropped() {
        let (mut router, _) = router_with(&[1]);
        let mut queued: VecDeque<_> = [wc(99, 1), wc(1, 2)].into();
        assert_eq!(poll_ids(&mut router, 0, &mut queued, 16), [2]);
    }
}
