//! An epoll set: the fds a selector sleeps on, each under a token of its choosing.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{check, Error, Result};

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
