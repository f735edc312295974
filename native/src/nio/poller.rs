//! A selector's native half: the readiness of every registered socket in one call.
//!
//! The Java selector registers each socket under a slot number that its key
//! holds, and keeps the interest of every slot in a buffer shared with us.
//! `select` asks sockets what they are ready for (which also makes progress:
//! completions polled, credit taken), but only the ones that may have news, so
//! that a select costs what the active sockets cost, not what all registered
//! ones do (a replica's idle clients are not polled):
//!
//! - A socket is *hot* after it was registered, signalled, given a new
//!   interest or found ready. Every look asks it.
//! - A hot socket that stays idle is *armed*: its sources are asked to signal
//!   the next change for its interest, and then it is asked once more (a change
//!   between the last look and the arming raises no signal). From then on it is
//!   not asked until one of its fds signals in the epoll set or its interest
//!   grows beyond what it was armed for. Idle means: not ready when the select
//!   is about to sleep, or for `SPIN_COOL_DOWN` while it spins (so that idle
//!   sockets are armed also while another socket keeps a selector busy). A
//!   socket whose readiness changes only with a signal (a kernel TCP socket,
//!   whose last reported readiness its stream keeps: `signalled`) is armed as
//!   soon as it is not ready, which costs it nothing.
//! - While any socket is armed, an `epoll_wait(0)` collects the signalled ones
//!   on every `LOOKS_PER_COLLECT`th select (a syscall on every select
//!   measurably slows a busy connection down for the sake of idle ones), and
//!   on every `LOOKS_PER_COLLECT`th later look of a select (a spin's), twice as
//!   many after each collect that found nothing (a spin's looks take tens of
//!   nanoseconds: a busy-polling ping-pong's server collected every other
//!   round trip for its idle listener), or sooner once `COLLECT_ARMED_AFTER` has
//!   passed since the last collect; before the one look of a `select` with a
//!   zero timeout, which must see what arrived before it; and, in busy mode,
//!   before each look when the last one left no socket hot. So an armed
//!   socket's news waits at most that many selects, and not much longer than
//!   that time, while hot sockets keep the selector busy.
//!   A hot socket that is ready for part of its interest and learns of the
//!   rest from signals (a kernel socket ready to write and waiting for data)
//!   has its signals collected before every look: the select returns with it
//!   anyway, so that is one `epoll_wait` per select.
//! - Spinning only pays over memory: with no socket hot, a poller that is not
//!   busy sleeps at once (so a selector of TCP sockets makes one `epoll_wait`
//!   per select, as the JDK's does). An adaptive one spins only while spinning
//!   pays (`spin`), and longer the more sockets are hot (their peers would
//!   ring a doorbell on their next message were they armed for a sleep).
//! - To sleep, the poller arms every idle socket and sleeps in `epoll_wait` on
//!   all fds and the wakeup eventfd.
//!
//! The fds are edge-triggered: a signal only means "look again". What changes a
//! socket without a signal of its medium (a connect or listen starting, a half
//! close, a failure met by an operation, a close) writes the socket's own kick
//! eventfd, which is in the set too.
//!
//! An RDMA socket's completions come through a completion queue
//! (`completions`) that it may share: the connections that sockets registered
//! here accept (or make, connecting) share the poller's queue (its
//! `CompletionGroup`); others have a private queue. An armed RDMA socket wakes
//! when someone routes a completion to it. So the poller watches each queue's
//! channel once, however many of its sockets are at that queue: every collect
//! routes the group queues first (no syscall), and a sleep is bracketed by
//! their `sleep_begins` and `sleep_ends`; a private queue is armed with its
//! socket and routed when its channel signals. Routing done by the poller
//! reports the sockets it woke directly (the `woken` slots), without their
//! eventfds.
//!
//! Only the selecting thread calls `register`, `deregister` and `select`;
//! `wakeup` may come from any thread.

use std::mem;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::nio::socket::{Look, Socket};
use crate::nio::spin::AdaptiveSpin;
use crate::rdma::completions::{CompletionChannel, CompletionGroup, Watcher};
use crate::sys::epoll::EpollSet;
use crate::sys::{self, Deadline};

/// The epoll token of the wakeup eventfd (slots are small numbers).
const WAKEUP_TOKEN: u64 = u64::MAX;
/// The epoll tokens of completion channels: this bit and the channel's index.
const CHANNEL_TOKEN: u64 = 1 << 62;
/// EPOLLPRI: a kernel socket learns of a peer's urgent data (see `TcpByteStream`).
const SOCKET_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// The epoll tokens of liveness fds (see `ByteStream::liveness_fd`): this bit and the slot.
const LIVENESS_TOKEN: u64 = 1 << 61;
/// A socket's fds are watched under its slot and, from this bit on, the fd's
/// index among its sources (so that a kernel socket learns its own events).
const SOURCE_SHIFT: u32 = 32;
/// Level-triggered: a peer's death may come while its socket is hot (asked,
/// not armed), when an edge would be dropped; the fd goes once it is handled.
/// Nothing asked: epoll reports a hang-up or an error anyway (`sys::liveness`).
const LIVENESS_EVENTS: u32 = 0;
/// How long a spinning selector keeps asking an idle socket before it arms
/// it: long enough that a connection in steady use is never armed (arming, and
/// consuming the signal after, cost syscalls on its next message).
const SPIN_COOL_DOWN: Duration = Duration::from_millis(10);
/// While hot sockets are asked, the armed ones' signals are collected on every
/// this many selects, and on every this many looks of a spin...
const LOOKS_PER_COLLECT: u32 = 16;
/// ...a spin's twice as many after each collect that found nothing, up to
/// this many (then `COLLECT_ARMED_AFTER` decides); a collect that brings news
/// starts again from `LOOKS_PER_COLLECT`.
const SPIN_LOOKS_PER_COLLECT_AT_MOST: u32 = 1 << 16;
/// ...or once this long has passed since the last collect, when looks are
/// long: a selector serving 256 kernel sockets takes up to milliseconds for
/// 16 looks, and a socket whose data came meanwhile waited that long (the tcp
/// 256-connection echo's p99 3-4x the JDK's). Looks alone, not time alone:
/// an armed shm socket's news waits for the next collect while its peer
/// rings, and a 256-connection echo over shm whose selectors collected every
/// 200 us instead of every 16 short looks fell into lockstep, each selector
/// sleeping through the other's batch (5x the syscalls, 20-30% slower).
const COLLECT_ARMED_AFTER: Duration = Duration::from_micros(200);

/// An adaptive select spins this much longer for each socket its sleep would
/// arm: the peer of an armed shm socket rings its doorbell (a syscall) on its
/// next message, so a selector busy with many connections that slept as soon
/// as a short spin found nothing would have every peer pay that on every
/// message (a 256-connection echo: one ring per message, 25% of its
/// throughput), and a longer spin is cheaper than the rings it saves.
const SPIN_PER_HOT_SOCKET: Duration = Duration::from_micros(2);
/// What the hot sockets add to a spin at most.
const SPIN_FOR_HOT_SOCKETS_AT_MOST: Duration = Duration::from_millis(1);

/// How long an adaptive poller spins unless told otherwise (`rdmanio.spinMicros`'s default).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// How `select` waits when nothing is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Never sleeps: polls until something is ready (lowest latency, one core).
    Busy,
    /// Sleeps at once.
    Blocking,
    /// Polls for this long, then sleeps.
    Adaptive(Duration),
}

impl FromStr for PollMode {
    type Err = Error;

    /// "busy", "blocking" or "adaptive" (spinning `DEFAULT_SPIN`; see `spinning_for`).
    fn from_str(name: &str) -> Result<PollMode> {
        match name {
            "busy" => Ok(PollMode::Busy),
            "blocking" => Ok(PollMode::Blocking),
            "adaptive" => Ok(PollMode::Adaptive(DEFAULT_SPIN)),
            other => Err(Error::InvalidArgument(format!(
                "unknown polling mode '{other}': use busy, blocking or adaptive"
            ))),
        }
    }
}

impl PollMode {
    /// The same mode, spinning `spin` if it is adaptive.
    pub fn spinning_for(self, spin: Duration) -> PollMode {
        match self {
            PollMode::Adaptive(_) => PollMode::Adaptive(spin),
            other => other,
        }
    }

    /// How long a socket may stay idle and still be asked on every look, while
    /// the select spins (before it sleeps, none).
    fn cool_down_while_spinning(self) -> Duration {
        match self {
            PollMode::Busy => SPIN_COOL_DOWN,
            PollMode::Blocking => Duration::ZERO,
            // The spin is for the hot sockets; the sleep after it arms the idle ones.
            PollMode::Adaptive(spin) => spin.max(SPIN_COOL_DOWN),
        }
    }
}

/// An adaptive select's spin, `learned` (none while spinning does not pay),
/// when the last look left `hot` sockets hot: longer by `SPIN_PER_HOT_SOCKET`
/// for each.
fn spin_with_hot_sockets(learned: Duration, hot: usize) -> Duration {
    if learned.is_zero() {
        return learned;
    }
    let hot = u32::try_from(hot).unwrap_or(u32::MAX);
    learned + SPIN_PER_HOT_SOCKET.saturating_mul(hot).min(SPIN_FOR_HOT_SOCKETS_AT_MOST)
}

/// Numbers the pollers: the seats a poller watches know it by its number.
static POLLERS: AtomicUsize = AtomicUsize::new(1);

/// The native half of one selector.
pub struct Poller {
    /// The completion queues of the connections that sockets registered here accept or make.
    completions: Arc<CompletionGroup>,
    epoll: EpollSet,
    wakeup: OwnedFd,
    woken: AtomicBool,
    mode: PollMode,
    slots: Mutex<Slots>,
}

struct Slots {
    registered: Vec<Option<Registered>>,
    /// The interest each slot's socket is armed for: 0 while it is hot, all
    /// bits for a free slot. Apart from `registered` so that a look over many
    /// quiet sockets reads one small array.
    armed_for: Vec<u32>,
    /// How many registered sockets are armed.
    armed: usize,
    events: Vec<libc::epoll_event>,
    /// How many times a socket was asked what it is ready for.
    asks: u64,
    /// How many sockets the last look left hot (asked and not armed) whose
    /// readiness a look reads from memory: when none, only signals bring
    /// news, so an adaptive select sleeps instead of spinning.
    hot_polled: usize,
    /// How many it left hot that are ready for part of their interest and
    /// learn of the rest from their signals (a kernel socket ready to write,
    /// waiting for data too): while any is, each look collects signals first.
    hot_partly_ready: usize,
    /// Selects (their first looks) since the armed sockets' signals were last collected.
    selects_since_collect: u32,
    /// A spin's later looks since then.
    spin_looks_since_collect: u32,
    /// How many of those make a collect due: see `SPIN_LOOKS_PER_COLLECT_AT_MOST`.
    spin_looks_per_collect: u32,
    /// How many collects (`epoll_wait(0)`) selects made.
    collects: u64,
    /// When they were last collected.
    collected_at: Instant,
    /// How long an adaptive select spins (see `spin`).
    spin: AdaptiveSpin,
    /// The completion channels the registered sockets share, each in the
    /// epoll set once (a free entry is None: tokens are indexes).
    channels: Vec<Option<WatchedChannel>>,
    /// This poller's number, as the seats it watches know it.
    id: usize,
    /// The slots whose sockets the last routing woke (kept for its capacity).
    woken: Vec<usize>,
}

struct WatchedChannel {
    channel: CompletionChannel,
    /// Registered sockets at its queue.
    users: usize,
}

/// How one look of a select goes (see `Slots::look`).
#[derive(Clone, Copy)]
struct Pass {
    now: Instant,
    /// The sockets idle for this long are armed.
    cool_down: Duration,
    /// Collect before the look when the last left no socket hot to poll.
    collect_if_cold: bool,
    /// A later look of the select: counted as a spin's.
    spin: bool,
}

/// The `armed_for` of a free slot: it covers every interest, so no look stops there.
const FREE: u32 = u32::MAX;

struct Registered {
    socket: Arc<Socket>,
    /// The fds in the epoll set for this slot (a socket's fds change when it
    /// starts to connect or listen, and when a connect completes).
    fds: [RawFd; 4],
    /// Its liveness fd in the epoll set (level-triggered), or -1.
    liveness: RawFd,
    /// The completion channel of its queue, if it shares one (see `fds`).
    channel: Option<CompletionChannel>,
    /// When it was last ready or became hot: it cools down from then.
    active_at: Instant,
}

impl Poller {
    /// A poller with no sockets.
    pub fn new(mode: PollMode) -> Result<Poller> {
        let epoll = EpollSet::new()?;
        let wakeup = sys::eventfd()?;
        // Level-triggered: a wakeup before the select stays visible until cleared.
        epoll.control(libc::EPOLL_CTL_ADD, wakeup.as_raw_fd(), libc::EPOLLIN as u32, WAKEUP_TOKEN)?;
        Ok(Poller {
            completions: Arc::default(),
            epoll,
            wakeup,
            woken: AtomicBool::new(false),
            mode,
            slots: Mutex::new(Slots {
                registered: Vec::new(),
                armed_for: Vec::new(),
                armed: 0,
                events: Vec::new(),
                asks: 0,
                hot_polled: 0,
                hot_partly_ready: 0,
                selects_since_collect: 0,
                spin_looks_since_collect: 0,
                spin_looks_per_collect: LOOKS_PER_COLLECT,
                collects: 0,
                collected_at: Instant::now(),
                spin: AdaptiveSpin::new(match mode {
                    PollMode::Adaptive(spin) => spin,
                    _ => Duration::ZERO,
                }),
                channels: Vec::new(),
                id: POLLERS.fetch_add(1, Ordering::Relaxed),
                woken: Vec::new(),
            }),
        })
    }

    /// Registers `socket` under `slot` (which must be free). It starts hot.
    pub fn register(&self, slot: usize, socket: Arc<Socket>) -> Result<()> {
        let mut slots = self.slots.lock();
        if slots.registered.len() <= slot {
            slots.registered.resize_with(slot + 1, || None);
            slots.armed_for.resize(slot + 1, FREE);
        }
        if slots.registered[slot].is_some() {
            return Err(Error::InvalidArgument(format!("selector slot {slot} is taken")));
        }
        let fds = socket.all_sources();
        watch_sources(&self.epoll, &fds, slot)?;
        socket.offer_completions(&self.completions);
        let channel = socket.completion_channel();
        if let Some(channel) = &channel {
            slots.watch_channel(&self.epoll, channel, slot)?;
        }
        let liveness = socket.liveness_fd();
        self.epoll.watch(&[liveness], LIVENESS_EVENTS, LIVENESS_TOKEN | slot as u64)?;
        slots.registered[slot] =
            Some(Registered { socket, fds, liveness, channel, active_at: Instant::now() });
        slots.armed_for[slot] = 0;
        let capacity = slots.registered.len() + 1;
        slots.events.resize(capacity, libc::epoll_event { events: 0, u64: 0 });
        Ok(())
    }

    /// Forgets the socket of `slot` (its fds stay open while anyone holds it;
    /// an armed socket stays armed, which only costs whoever watches it a look).
    pub fn deregister(&self, slot: usize) {
        let mut slots = self.slots.lock();
        if let Some(registered) = slots.registered.get_mut(slot).and_then(Option::take) {
            self.epoll.unwatch(&registered.fds);
            self.epoll.unwatch(&[registered.liveness]);
            registered.socket.withdraw_completions(&self.completions);
            if let Some(channel) = &registered.channel {
                slots.unwatch_channel(&self.epoll, channel);
            }
            if slots.armed_for[slot] != 0 {
                slots.armed -= 1;
            }
            slots.armed_for[slot] = FREE;
        }
    }

    /// Makes the current or next `select` return at once.
    pub fn wakeup(&self) -> Result<()> {
        self.woken.store(true, Ordering::Release);
        sys::signal_eventfd(&self.wakeup)
    }

    /// Consumes a wakeup (the selector calls this after the select it ended).
    pub fn clear_wakeup(&self) -> Result<()> {
        self.woken.store(false, Ordering::Release);
        sys::drain_eventfd(&self.wakeup).map(drop)
    }

    /// How many times `select` asked a socket what it is ready for, since the
    /// poller was made: what selects cost, for tests and benchmarks.
    pub fn asks(&self) -> u64 {
        self.slots.lock().asks
    }

    /// How many times `select` collected signals without sleeping (an
    /// `epoll_wait(0)` each), since the poller was made: for tests and benchmarks.
    pub fn collects(&self) -> u64 {
        self.slots.lock().collects
    }

    /// Waits until a socket is ready for its interest (`interests[slot]`), the
    /// timeout passes (`None` waits forever; zero only looks) or `wakeup` is
    /// called. Writes `(slot, ready ops)` pairs into `ready` and returns how
    /// many. Sockets beyond the room in `ready` wait for the next call.
    pub fn select(&self, interests: &[i32], ready: &mut [i32], timeout: Option<Duration>) -> Result<usize> {
        let mut slots = self.slots.lock();
        if timeout == Some(Duration::ZERO) {
            // Its one look sees every signal that came before it.
            slots.collect_at_next_look();
        }
        // One reading of the clock serves until the next wait: a sleep's end, a spin's turn.
        let began = Instant::now();
        let deadline = Deadline::after_from(began, timeout);
        let budget = match self.mode {
            PollMode::Adaptive(_) => slots.spin_budget(began),
            _ => Duration::ZERO,
        };
        let spin_until = match self.mode {
            PollMode::Busy => None,
            _ => Some(began + budget),
        };
        let mut waited = false;
        let mut now = began;
        loop {
            let spinning = spin_until.is_none_or(|until| now < until);
            let pass = Pass {
                now,
                // Before a sleep every idle socket is armed, while spinning those idle for the cool-down.
                cool_down: if spinning { self.mode.cool_down_while_spinning() } else { Duration::ZERO },
                // A busy poller with nothing hot spins on collecting; the others sleep to collect.
                collect_if_cold: self.mode == PollMode::Busy,
                spin: waited,
            };
            let found = slots.look(&self.epoll, interests, ready, pass)?;
            if found > 0 || timeout == Some(Duration::ZERO) || self.woken.load(Ordering::Acquire) {
                if waited {
                    slots.spin.waited(budget, now.duration_since(began), true);
                }
                return Ok(found);
            }
            if deadline.expired_at(now) {
                slots.spin.waited(budget, now.duration_since(began), false);
                return Ok(0);
            }
            waited = true;
            // Spinning asks the hot sockets; with none, only a signal brings news.
            now = if spinning && (self.mode == PollMode::Busy || slots.hot_polled > 0) {
                std::hint::spin_loop();
                Instant::now()
            } else {
                // Not expired at `now`, so at least 1 ms: a sleep, after which the clock is read.
                slots.take_signals(&self.epoll, deadline.poll_millis_at(now), now)?
            };
        }
    }
}

impl Slots {
    /// Asks the hot sockets, after collecting the signals of the armed ones
    /// (when due: see the module's documentation and `Pass`) and of the hot
    /// ones that learn their readiness from them (each look); arms those idle
    /// for at least the pass's `cool_down`.
    fn look(&mut self, epoll: &EpollSet, interests: &[i32], ready: &mut [i32], pass: Pass) -> Result<usize> {
        let Pass { now, cool_down, collect_if_cold, spin } = pass;
        let counted_out = if spin {
            self.spin_looks_since_collect += 1;
            self.spin_looks_since_collect >= self.spin_looks_per_collect
        } else {
            self.selects_since_collect += 1;
            self.selects_since_collect >= LOOKS_PER_COLLECT
        };
        let cold = self.hot_polled == 0 && collect_if_cold;
        let due = cold || counted_out || now.duration_since(self.collected_at) >= COLLECT_ARMED_AFTER;
        if self.hot_partly_ready > 0 || (self.armed > 0 && due) {
            self.take_signals(epoll, 0, now)?;
        }
        let mut found = 0;
        self.hot_polled = 0;
        self.hot_partly_ready = 0;
        for (slot, &interest) in interests.iter().enumerate().take(self.armed_for.len()) {
            let interest = interest as u32;
            // Nothing wanted, a free slot, or armed for all it wants and quiet.
            if interest & !self.armed_for[slot] == 0 || 2 * found + 1 >= ready.len() {
                continue;
            }
            // Hot, or armed for less than it wants now (a write may need to ask the peer for credit).
            self.make_hot(slot, now);
            let Some(registered) = &self.registered[slot] else { continue };
            let idle = now.duration_since(registered.active_at) >= cool_down;
            let look = self.ask(slot, interest);
            let mut ops = look.ops;
            // What changes only with a signal is armed at once (a kernel
            // socket: no syscall), so that only what is worth polling stays hot.
            if ops == 0 && (idle || look.signals_by_itself) {
                self.arm(epoll, slot, interest)?;
                // A change just before the arming raised no signal: look once more.
                ops = self.ask(slot, interest).ops;
            }
            if self.armed_for[slot] == 0 && !look.signals_by_itself {
                self.hot_polled += 1;
            } else if self.armed_for[slot] == 0 && ops != interest {
                self.hot_partly_ready += 1;
            }
            if ops != 0 {
                self.mark_active(slot, now);
                found = report(ready, found, slot, ops);
            }
        }
        Ok(found)
    }

    fn collect_at_next_look(&mut self) {
        self.selects_since_collect = LOOKS_PER_COLLECT;
        self.spin_looks_since_collect = self.spin_looks_per_collect;
    }

    /// How long an adaptive select may spin: see `spin_with_hot_sockets`.
    fn spin_budget(&self, now: Instant) -> Duration {
        spin_with_hot_sockets(self.spin.budget(now), self.hot_polled)
    }

    fn ask(&mut self, slot: usize, interest: u32) -> Look {
        self.asks += 1;
        match &self.registered[slot] {
            Some(registered) => registered.socket.look(interest),
            None => Look { ops: 0, signals_by_itself: true },
        }
    }

    /// Asks the socket of `slot` to signal the next change for `interest`,
    /// watching its current fds.
    fn arm(&mut self, epoll: &EpollSet, slot: usize, interest: u32) -> Result<()> {
        let Some(registered) = &mut self.registered[slot] else { return Ok(()) };
        // A connect that started or completed brings other fds.
        let fds = registered.socket.all_sources();
        if fds != registered.fds {
            epoll.unwatch(&registered.fds);
            registered.fds = fds;
            watch_sources(epoll, &fds, slot)?;
            // A completed connect brings the liveness fd too (a gone peer's
            // goes in `peer_may_be_gone`): no lock of the socket's on every arm.
            Self::refresh_liveness(epoll, registered, slot)?;
        }
        let socket = Arc::clone(&registered.socket);
        self.refresh_channel(epoll, slot)?;
        socket.arm(interest);
        self.armed_for[slot] = interest;
        self.armed += 1;
        Ok(())
    }

    /// Ends the arming of the socket of `slot`, if any: its signals are
    /// consumed, and it is asked on every look until it cools down again.
    fn make_hot(&mut self, slot: usize, now: Instant) {
        let Some(registered) = &mut self.registered[slot] else { return };
        if self.armed_for[slot] != 0 {
            registered.socket.disarm();
            registered.active_at = now;
            self.armed_for[slot] = 0;
            self.armed -= 1;
        }
    }

    /// Watches the socket's current liveness fd, which a connect brings and
    /// a peer found gone takes away.
    fn refresh_liveness(epoll: &EpollSet, registered: &mut Registered, slot: usize) -> Result<()> {
        let liveness = registered.socket.liveness_fd();
        if liveness != registered.liveness {
            epoll.unwatch(&[registered.liveness]);
            registered.liveness = liveness;
            epoll.watch(&[liveness], LIVENESS_EVENTS, LIVENESS_TOKEN | slot as u64)?;
        }
        Ok(())
    }

    /// The liveness fd of `slot` signalled: the socket looks whether its peer
    /// is gone (then it is ready, and its liveness fd leaves the set), and is
    /// asked again.
    fn peer_may_be_gone(&mut self, epoll: &EpollSet, slot: usize, now: Instant) -> Result<()> {
        let Some(registered) = &mut self.registered[slot] else { return Ok(()) };
        registered.socket.check_liveness();
        Self::refresh_liveness(epoll, registered, slot)?;
        self.make_hot(slot, now);
        Ok(())
    }

    /// The socket of `slot` was ready: it is hot, and cools down from now.
    fn mark_active(&mut self, slot: usize, now: Instant) {
        self.make_hot(slot, now);
        if let Some(registered) = &mut self.registered[slot] {
            registered.active_at = now;
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) for signals; the armed sockets
    /// that signalled become hot. The shared completion queues are routed
    /// first, which signals the armed sockets that have completions.
    ///
    /// Returns when it collected: `now` (the caller's reading of the clock)
    /// when it did not wait, the clock's after a wait.
    fn take_signals(&mut self, epoll: &EpollSet, timeout_ms: libc::c_int, now: Instant) -> Result<Instant> {
        let mut woken = mem::take(&mut self.woken);
        let mut watcher = Watcher { id: self.id, woken: &mut woken, wrote: false };
        let n = if timeout_ms == 0 {
            for watched in self.group_channels() {
                watched.channel.route(&mut watcher)?;
            }
            self.collects += 1;
            epoll.wait(&mut self.events, 0)?
        } else {
            self.sleep(epoll, timeout_ms, &mut watcher)?
        };
        for i in 0..n {
            let token = self.events[i].u64;
            if token & CHANNEL_TOKEN != 0 && token != WAKEUP_TOKEN {
                // A private queue armed with its seat, or a group's armed by some
                // sleeper (after a sleep of ours, `sleep_ends` took that one).
                let Some(Some(watched)) = self.channels.get((token & !CHANNEL_TOKEN) as usize) else {
                    continue;
                };
                if timeout_ms == 0 || watched.channel.is_private() {
                    watched.channel.take_events(&mut watcher)?;
                }
            }
        }
        let wrote = watcher.wrote;
        self.spin_looks_per_collect = match n == 0 && woken.is_empty() {
            true => (self.spin_looks_per_collect * 2).min(SPIN_LOOKS_PER_COLLECT_AT_MOST),
            false => LOOKS_PER_COLLECT,
        };
        self.selects_since_collect = 0;
        self.spin_looks_since_collect = 0;
        if wrote {
            // Signals written while routing (for sockets other waiters watch too).
            self.collect_at_next_look();
        }
        let now = if timeout_ms == 0 { now } else { Instant::now() };
        self.collected_at = now;
        for &slot in woken.iter() {
            self.make_hot(slot, now);
        }
        for i in 0..n {
            let libc::epoll_event { events, u64: token } = self.events[i];
            if token & LIVENESS_TOKEN != 0 && token != WAKEUP_TOKEN {
                self.peer_may_be_gone(epoll, (token & !LIVENESS_TOKEN) as usize, now)?;
            } else if token & CHANNEL_TOKEN == 0 {
                let (slot, index) = ((token as u32) as usize, (token >> SOURCE_SHIFT) as usize);
                let Some(Some(registered)) = self.registered.get(slot) else { continue };
                if let Some(&fd) = registered.fds.get(index) {
                    registered.socket.signalled(fd, events);
                }
                self.make_hot(slot, now);
            }
        }
        woken.clear();
        self.woken = woken;
        Ok(now)
    }

    /// The channels of group queues (see `completions`): routed on every
    /// collect, armed around a sleep. A private queue is armed with its seat.
    fn group_channels(&self) -> impl Iterator<Item = &WatchedChannel> {
        self.channels.iter().flatten().filter(|watched| !watched.channel.is_private())
    }

    /// Sleeps in `epoll_wait`, the group queues armed for it; then takes
    /// their events and routes what arrived.
    fn sleep(&mut self, epoll: &EpollSet, timeout_ms: libc::c_int, watcher: &mut Watcher) -> Result<usize> {
        let mut begun = 0;
        let mut slept = Ok(0);
        for watched in self.group_channels() {
            if let Err(err) = watched.channel.sleep_begins() {
                slept = Err(err);
                break;
            }
            begun += 1;
        }
        if slept.is_ok() {
            slept = epoll.wait(&mut self.events, timeout_ms);
        }
        for watched in self.group_channels().take(begun) {
            let ended = watched.channel.sleep_ends(Some(watcher));
            if slept.is_ok() {
                ended?;
            }
        }
        slept
    }

    /// Watches `channel` for one more registered socket, the one of `slot`.
    fn watch_channel(&mut self, epoll: &EpollSet, channel: &CompletionChannel, slot: usize) -> Result<()> {
        channel.watch(self.id, slot);
        if let Some(watched) = self.channels.iter_mut().flatten().find(|w| w.channel.same_as(channel)) {
            watched.users += 1;
            return Ok(());
        }
        let index = self.channels.iter().position(Option::is_none).unwrap_or(self.channels.len());
        epoll.control(libc::EPOLL_CTL_ADD, channel.fd(), SOCKET_EVENTS, CHANNEL_TOKEN | index as u64)?;
        let watched = WatchedChannel { channel: channel.of_queue(), users: 1 };
        if index == self.channels.len() {
            self.channels.push(Some(watched));
        } else {
            self.channels[index] = Some(watched);
        }
        Ok(())
    }

    /// One registered socket fewer watches `channel`; the last takes it out of the set.
    fn unwatch_channel(&mut self, epoll: &EpollSet, channel: &CompletionChannel) {
        channel.unwatch(self.id);
        let Some(entry) =
            self.channels.iter_mut().find(|entry| entry.as_ref().is_some_and(|w| w.channel.same_as(channel)))
        else {
            return;
        };
        let watched = entry.as_mut().expect("found");
        watched.users -= 1;
        if watched.users == 0 {
            epoll.unwatch(&[channel.fd()]);
            *entry = None;
        }
    }

    /// Follows a socket whose stream came to share a completion queue (a connect completed).
    fn refresh_channel(&mut self, epoll: &EpollSet, slot: usize) -> Result<()> {
        let Some(registered) = &self.registered[slot] else { return Ok(()) };
        let channel = registered.socket.completion_channel();
        let same = match (&channel, &registered.channel) {
            (Some(new), Some(old)) => new.same_as(old),
            (None, None) => true,
            _ => false,
        };
        if same {
            return Ok(());
        }
        if let Some(old) = registered.channel.clone() {
            self.unwatch_channel(epoll, &old);
        }
        if let Some(new) = &channel {
            self.watch_channel(epoll, new, slot)?;
        }
        if let Some(registered) = &mut self.registered[slot] {
            registered.channel = channel;
        }
        Ok(())
    }
}

/// Watches a socket's `fds` (negative ones are skipped), each under its slot and index.
fn watch_sources(epoll: &EpollSet, fds: &[RawFd], slot: usize) -> Result<()> {
    for (index, &fd) in fds.iter().enumerate().filter(|(_, &fd)| fd >= 0) {
        let token = slot as u64 | (index as u64) << SOURCE_SHIFT;
        epoll.control(libc::EPOLL_CTL_ADD, fd, SOCKET_EVENTS, token)?;
    }
    Ok(())
}

/// Writes `(slot, ops)` as the `found`th pair of `ready`; returns the new count.
fn report(ready: &mut [i32], found: usize, slot: usize, ops: u32) -> usize {
    ready[2 * found] = slot as i32;
    ready[2 * found + 1] = ops as i32;
    found + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_select_spins_longer_for_each_hot_socket_its_sleep_would_arm() {
        let learned = Duration::from_micros(50);
        assert_eq!(spin_with_hot_sockets(learned, 0), learned, "nothing hot: the learned spin");
        assert_eq!(spin_with_hot_sockets(learned, 1), learned + SPIN_PER_HOT_SOCKET);
        assert_eq!(spin_with_hot_sockets(learned, 256), learned + 256 * SPIN_PER_HOT_SOCKET);
        assert_eq!(
            spin_with_hot_sockets(learned, usize::MAX),
            learned + SPIN_FOR_HOT_SOCKETS_AT_MOST,
            "however many are hot, the spin stays bounded"
        );
        assert_eq!(
            spin_with_hot_sockets(Duration::ZERO, 256),
            Duration::ZERO,
            "a select that learned not to spin does not, however many are hot"
        );
    }
}
