//! A selector's native half: the readiness of every registered socket in one call.
//!
//! The Java selector registers each socket under a slot number that its key
//! holds, and keeps the interest of every slot in a buffer shared with us.
//! `select` asks each socket with a non-empty interest what it is ready for
//! (which also makes progress: completions polled, credit taken). If none is
//! ready it spins (busy and adaptive modes), then arms them all, asks once more
//! (a change between the first look and the arming raises no signal) and sleeps
//! in `epoll_wait` on every socket's fds and the wakeup eventfd. The sockets'
//! fds are edge-triggered: a signal only means "look again", and the looking
//! is done by asking the sockets, so no signal needs to stay pending.
//!
//! Only the selecting thread calls `register`, `deregister` and `select`;
//! `wakeup` may come from any thread.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{check, Error, Result};
use crate::socket::Socket;
use crate::sys::{self, Deadline};

/// The epoll token of the wakeup eventfd (slots are small numbers).
const WAKEUP_TOKEN: u64 = u64::MAX;
const SOCKET_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

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

/// The native half of one selector.
pub struct Poller {
    epoll: OwnedFd,
    wakeup: OwnedFd,
    woken: AtomicBool,
    mode: PollMode,
    slots: Mutex<Slots>,
}

struct Slots {
    registered: Vec<Option<Registered>>,
    events: Vec<libc::epoll_event>,
    /// Slots armed for the current sleep.
    armed: Vec<usize>,
}

struct Registered {
    socket: Arc<Socket>,
    /// The fds in the epoll set for this slot (a socket's fds change when it
    /// starts to connect or listen, and when a connect completes).
    fds: [RawFd; 4],
}

impl Poller {
    /// A poller with no sockets.
    pub fn new(mode: PollMode) -> Result<Poller> {
        // SAFETY: no pointers; a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        check("epoll_create1", fd)?;
        // SAFETY: fd is new and ours.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let wakeup = sys::eventfd()?;
        let poller = Poller {
            epoll,
            wakeup,
            woken: AtomicBool::new(false),
            mode,
            slots: Mutex::new(Slots { registered: Vec::new(), events: Vec::new(), armed: Vec::new() }),
        };
        // Level-triggered: a wakeup before the select stays visible until cleared.
        poller.control(libc::EPOLL_CTL_ADD, poller.wakeup.as_raw_fd(), libc::EPOLLIN as u32, WAKEUP_TOKEN)?;
        Ok(poller)
    }

    fn control(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: a live epoll fd and a valid event struct.
        check("epoll_ctl", unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) })
    }

    fn watch(&self, slot: usize, fds: [RawFd; 4]) -> Result<()> {
        for fd in fds.into_iter().filter(|&fd| fd >= 0) {
            self.control(libc::EPOLL_CTL_ADD, fd, SOCKET_EVENTS, slot as u64)?;
        }
        Ok(())
    }

    fn unwatch(&self, fds: [RawFd; 4]) {
        for fd in fds.into_iter().filter(|&fd| fd >= 0) {
            if let Err(err) = self.control(libc::EPOLL_CTL_DEL, fd, 0, 0) {
                log::warn!("selector: cannot stop watching fd {fd}: {err}");
            }
        }
    }

    /// Registers `socket` under `slot` (which must be free).
    pub fn register(&self, slot: usize, socket: Arc<Socket>) -> Result<()> {
        let mut slots = self.slots.lock();
        if slots.registered.len() <= slot {
            slots.registered.resize_with(slot + 1, || None);
        }
        if slots.registered[slot].is_some() {
            return Err(Error::InvalidArgument(format!("selector slot {slot} is taken")));
        }
        let fds = socket.all_sources();
        self.watch(slot, fds)?;
        slots.registered[slot] = Some(Registered { socket, fds });
        let capacity = slots.registered.len() + 1;
        slots.events.resize(capacity, libc::epoll_event { events: 0, u64: 0 });
        Ok(())
    }

    /// Forgets the socket of `slot` (its fds stay open while anyone holds it).
    pub fn deregister(&self, slot: usize) {
        let mut slots = self.slots.lock();
        if let Some(registered) = slots.registered.get_mut(slot).and_then(Option::take) {
            self.unwatch(registered.fds);
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
        sys::drain_eventfd(&self.wakeup)
    }

    /// Waits until a socket is ready for its interest (`interests[slot]`), the
    /// timeout passes (`None` waits forever; zero only looks) or `wakeup` is
    /// called. Writes `(slot, ready ops)` pairs into `ready` and returns how
    /// many. Sockets beyond the room in `ready` wait for the next call.
    pub fn select(&self, interests: &[i32], ready: &mut [i32], timeout: Option<Duration>) -> Result<usize> {
        let mut slots = self.slots.lock();
        let deadline = Deadline::after(timeout);
        let spin_until = match self.mode {
            PollMode::Busy => None,
            PollMode::Blocking => Some(Instant::now()),
            PollMode::Adaptive(spin) => Some(Instant::now() + spin),
        };
        loop {
            let found = slots.scan(interests, ready);
            if found > 0 || timeout == Some(Duration::ZERO) || self.woken.load(Ordering::Acquire) {
                return Ok(found);
            }
            if deadline.expired() {
                return Ok(0);
            }
            if spin_until.is_none_or(|until| Instant::now() < until) {
                std::hint::spin_loop();
                continue;
            }
            // Arm everyone, look once more, and only then sleep.
            self.arm(&mut slots, interests)?;
            let found = slots.scan(interests, ready);
            if found > 0 || self.woken.load(Ordering::Acquire) {
                slots.disarm();
                return Ok(found);
            }
            let slept = self.sleep(&mut slots, deadline);
            slots.disarm();
            slept?;
        }
    }

    fn arm(&self, slots: &mut Slots, interests: &[i32]) -> Result<()> {
        slots.armed.clear();
        for slot in 0..slots.registered.len().min(interests.len()) {
            let interest = interests[slot] as u32;
            let Some(registered) = &mut slots.registered[slot] else { continue };
            if interest == 0 {
                continue;
            }
            registered.socket.arm(interest);
            // A connect that completed brings the stream's fds instead of its signal.
            let fds = registered.socket.all_sources();
            if fds != registered.fds {
                self.unwatch(registered.fds);
                registered.fds = fds;
                self.watch(slot, fds)?;
            }
            slots.armed.push(slot);
        }
        Ok(())
    }

    fn sleep(&self, slots: &mut Slots, deadline: Deadline) -> Result<()> {
        let capacity = slots.events.len().max(1);
        slots.events.resize(capacity, libc::epoll_event { events: 0, u64: 0 });
        loop {
            // SAFETY: a live epoll fd and room for `capacity` events.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    slots.events.as_mut_ptr(),
                    capacity as libc::c_int,
                    deadline.poll_millis(),
                )
            };
            if n >= 0 {
                return Ok(()); // whichever fired, the next scan looks at everyone
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(Error::last_os("epoll_wait"));
            }
        }
    }
}

impl Slots {
    fn scan(&self, interests: &[i32], ready: &mut [i32]) -> usize {
        let mut found = 0;
        for (slot, registered) in self.registered.iter().enumerate().take(interests.len()) {
            let interest = interests[slot] as u32;
            let Some(registered) = registered else { continue };
            if interest == 0 || 2 * found + 1 >= ready.len() {
                continue;
            }
            let ops = registered.socket.ready(interest);
            if ops != 0 {
                ready[2 * found] = slot as i32;
                ready[2 * found + 1] = ops as i32;
                found += 1;
            }
        }
        found
    }

    fn disarm(&mut self) {
        for &slot in &self.armed {
            if let Some(registered) = &self.registered[slot] {
                registered.socket.disarm();
            }
        }
        self.armed.clear();
    }
}
