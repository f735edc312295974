//! An epoll set: the fds a selector sleeps on, each under a token of its
//! choosing; and `WaitSet`, the set a socket's blocking waits keep.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{check, Error, Result};
use crate::sys::Deadline;

/// An epoll fd.
pub(crate) struct EpollSet {
    fd: OwnedFd,
}

impl EpollSet {
    pub(crate) fn new() -> Result<EpollSet> {
        // SAFETY: no pointers; a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        check("epoll_create1", fd)?;
        // SAFETY: fd is new and ours.
        Ok(EpollSet { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub(crate) fn control(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: a live epoll fd and a valid event struct.
        check("epoll_ctl", unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) })
    }

    /// Watches each of `fds` (negative ones are skipped) for `events` under `token`.
    pub(crate) fn watch(&self, fds: &[RawFd], events: u32, token: u64) -> Result<()> {
        for &fd in fds.iter().filter(|&&fd| fd >= 0) {
            self.control(libc::EPOLL_CTL_ADD, fd, events, token)?;
        }
        Ok(())
    }

    /// Stops watching each of `fds` (negative ones are skipped).
    pub(crate) fn unwatch(&self, fds: &[RawFd]) {
        for &fd in fds.iter().filter(|&&fd| fd >= 0) {
            match self.control(libc::EPOLL_CTL_DEL, fd, 0, 0) {
                Ok(()) => {}
                // A socket pre-closed under its fd left the set as it closed (see `sys::pre_close`).
                Err(err) if err.errno() == Some(libc::ENOENT) => log::debug!("epoll: fd {fd} left by itself"),
                Err(err) => log::warn!("epoll: cannot stop watching fd {fd}: {err}"),
            }
        }
    }

    /// Waits up to `timeout_ms` for events; returns how many landed in
    /// `events` (0 also when a signal interrupted the wait: callers look again).
    /// Events beyond its room stay queued for the next wait.
    pub(crate) fn wait(&self, events: &mut Vec<libc::epoll_event>, timeout_ms: libc::c_int) -> Result<usize> {
        if events.is_empty() {
            events.push(libc::epoll_event { events: 0, u64: 0 });
        }
        // SAFETY: a live epoll fd and room for `events.len()` events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        Err(Error::last_os("epoll_wait"))
    }
}

/// One thread's wait on a few fds, kept set up between waits: an epoll set
/// changed only where an fd or its events changed since the last wait, so a
/// socket that blocks again and again sleeps in one syscall, and its sources
/// can be watched edge-triggered (`EPOLLET` in their events), as a selector
/// watches them, where poll(2) is level-triggered only. The fds must stay
/// open while they are watched (a closed fd leaves the set by itself, and a
/// reused number would then look watched while it is not).
pub(crate) struct WaitSet<const N: usize> {
    epoll: EpollSet,
    /// What each slot watches: the fd (-1: nothing) and its events.
    watched: [(RawFd, u32); N],
    events: Vec<libc::epoll_event>,
}

impl<const N: usize> WaitSet<N> {
    pub(crate) fn new() -> Result<WaitSet<N>> {
        Ok(WaitSet {
            epoll: EpollSet::new()?,
            watched: [(-1, 0); N],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; N],
        })
    }

    /// Waits until one of `fds` (each with its epoll events; -1: none)
    /// signals; returns which did. Fails with `TimedOut` (naming `op`) once
    /// the deadline passes.
    pub(crate) fn wait(
        &mut self,
        op: &'static str,
        fds: [(RawFd, u32); N],
        deadline: Deadline,
    ) -> Result<[bool; N]> {
        for (slot, &(fd, events)) in fds.iter().enumerate() {
            let (old, old_events) = self.watched[slot];
            if (fd, events) == (old, old_events) {
                continue;
            }
            if old >= 0 && old != fd {
                self.epoll.unwatch(&[old]);
                self.watched[slot] = (-1, 0);
            }
            if fd >= 0 {
                let how = if old == fd { libc::EPOLL_CTL_MOD } else { libc::EPOLL_CTL_ADD };
                self.epoll.control(how, fd, events, slot as u64)?;
            }
            self.watched[slot] = (fd, events); // only once it holds: a failure leaves the set as it says
        }
        let (epoll, events) = (&self.epoll, &mut self.events);
        deadline.sleep_until(op, |millis| {
            let n = epoll.wait(events, millis)?;
            let mut woke = [false; N];
            for event in &events[..n] {
                woke[event.u64 as usize] = true;
            }
            Ok((n > 0).then_some(woke))
        })
    }
}
