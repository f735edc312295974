//! The plain syscalls the engine needs around verbs: non-blocking event fds,
//! bounded waits for fds, and in submodules epoll sets (`epoll`), passing fds
//! over Unix sockets (`fd_passing`), the socket on standard input (`inherited`), TCP ports held without listening
//! (`port`), socket addresses in the C layout (`sockaddr`) and random bytes
//! (`random`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::error::{check, Error, Result};

pub(crate) mod epoll;
pub(crate) mod fd_passing;
pub(crate) mod inherited;
pub(crate) mod liveness;
pub(crate) mod port;
pub(crate) mod random;
pub(crate) mod sockaddr;
pub(crate) mod unix_socket;

/// Makes `fd` non-blocking, so draining an event channel never sleeps.
pub(crate) fn set_nonblocking(op: &'static str, fd: RawFd) -> Result<()> {
    // SAFETY: fcntl on an fd the caller owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    check(op, flags)?;
    // SAFETY: as above.
    check(op, unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })
}

/// A socket-level int option (`getsockopt(SOL_SOCKET, name)`).
pub(crate) fn int_socket_option(fd: &OwnedFd, name: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a live fd and room for an int.
    let done = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if done < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

/// A socket-level int option; `None` when the fd is not a socket.
pub(crate) fn socket_option(fd: &OwnedFd, name: libc::c_int) -> Result<Option<libc::c_int>> {
    match int_socket_option(fd, name) {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.raw_os_error() == Some(libc::ENOTSOCK) => Ok(None),
        Err(source) => Err(Error::Os { op: "getsockopt", source }),
    }
}

/// A new non-blocking eventfd (a kick, a wake-up or a completion signal).
pub(crate) fn eventfd() -> Result<OwnedFd> {
    // SAFETY: no pointers; a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    check("eventfd", fd)?;
    // SAFETY: fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new pipe, both ends non-blocking: (read end, write end).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two fds the call writes.
    check("pipe2", unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: both fds are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Open files of our own on the pipe that `fd`, an end a peer sent, is an
/// end of (the peer may have kept a copy of `fd`, and the flags of an open
/// file are shared by all its copies: it could make our reads or writes
/// block). Opened through `/proc/self/fd` as a named pipe is, non-blocking;
/// for each of `writes`, the write end when true, else the read end
/// (whichever `fd` is). One check that `fd` is a pipe serves them all.
///
/// # Errors
/// `InvalidArgument` when `fd` is no pipe; `ENXIO` for a write end when the pipe has no reader left.
pub(crate) fn reopen_pipe_ends<const N: usize>(fd: &OwnedFd, writes: [bool; N]) -> Result<[OwnedFd; N]> {
    if !is_pipe(fd) {
        return Err(Error::InvalidArgument(format!("fd {} is no pipe", fd.as_raw_fd())));
    }
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("no NUL in a path of digits");
    let mut ends = Vec::with_capacity(N);
    for write in writes {
        let access = if write { libc::O_WRONLY } else { libc::O_RDONLY };
        // SAFETY: a NUL-terminated path that lives for the call; a new fd or -1.
        let end = unsafe { libc::open(path.as_ptr(), access | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        check("open(/proc/self/fd, pipe)", end)?;
        // SAFETY: end is new and ours.
        ends.push(unsafe { OwnedFd::from_raw_fd(end) });
    }
    Ok(ends.try_into().expect("one end per entry of writes"))
}

/// Whether `fd` (one a peer sent could be anything) is an end of a pipe.
pub(crate) fn is_pipe(fd: &OwnedFd) -> bool {
    pipe_id(fd).is_some()
}

/// The pipe `fd` is an end of, by its device and inode; `None` for no pipe.
pub(crate) fn pipe_id(fd: &OwnedFd) -> Option<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid out-struct.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of an fd we hold into a live struct.
    let known = unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } == 0;
    (known && stat.st_mode & libc::S_IFMT == libc::S_IFIFO).then_some((stat.st_dev, stat.st_ino))
}

/// Makes a pipe readable (one byte); full, it is readable already (and the
/// failed write still wakes an edge-triggered epoll set that watches it). The
/// caller keeps a read end open: a pipe without a reader would fail the write
/// with `EPIPE` and raise `SIGPIPE`, which ends a process that does not ignore it.
pub(crate) fn signal_pipe(fd: &OwnedFd) -> Result<()> {
    // SAFETY: writing 1 byte from a live buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    if n != 1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
        return Err(Error::last_os("write(pipe)"));
    }
    Ok(())
}

/// Empties a non-blocking pipe; says whether it held anything. Rings are one
/// byte each, and a selector's sleeps leave theirs (see `ShmStream::disarm_watched`),
/// so a doorbell may hold up to a pipe's capacity: reads go on while they fill
/// the buffer (a bound keeps a peer that rings without pause from holding us).
pub(crate) fn drain_pipe(fd: &OwnedFd) -> Result<bool> {
    let mut bytes = [0u8; 4096];
    let mut drained = false;
    for _ in 0..64 {
        // SAFETY: reading into a live buffer of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
            return Err(Error::last_os("read(pipe)"));
        }
        drained |= n > 0;
        if n < bytes.len() as isize {
            break;
        }
    }
    Ok(drained)
}

/// Makes an eventfd readable.
pub(crate) fn signal_eventfd(fd: &OwnedFd) -> Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writing 8 bytes from a live buffer to an eventfd.
    let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
    // EAGAIN: the counter is saturated, so it is readable anyway.
    if n != 8 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
        return Err(Error::last_os("write(eventfd)"));
    }
    Ok(())
}

/// Makes a non-blocking eventfd unreadable again; says whether it was readable.
pub(crate) fn drain_eventfd(fd: &OwnedFd) -> Result<bool> {
    let mut count = [0u8; 8];
    // SAFETY: reading 8 bytes into a live buffer from a non-blocking eventfd.
    let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    if n != 8 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN) {
        return Err(Error::last_os("read(eventfd)"));
    }
    Ok(n == 8)
}

/// How many threads are runnable on the host now (running or waiting for a
/// core: the fourth field of `/proc/loadavg`, "runnable/total"). The file
/// stays open: each call is one `pread`.
pub(crate) fn runnable_threads() -> Result<u32> {
    use std::os::unix::fs::FileExt;
    let os = |source| Error::Os { op: "read(/proc/loadavg)", source };
    let file = load_file().as_ref().map_err(|err| os(std::io::Error::new(err.kind(), err.to_string())))?;
    let mut text = [0u8; 128];
    let n = file.read_at(&mut text, 0).map_err(os)?;
    let text = String::from_utf8_lossy(&text[..n]);
    text.split_whitespace()
        .nth(3)
        .and_then(|field| field.split('/').next())
        .and_then(|runnable| runnable.parse().ok())
        .ok_or_else(|| Error::InvalidArgument(format!("unexpected /proc/loadavg: {text}")))
}

/// `/proc/loadavg`, opened at the first call and kept open (one fd for the
/// process). Calling it early opens the file then, not amid a program's work
/// where a new fd looks leaked (OpenJDK's Unref test counts them).
pub(crate) fn load_file() -> &'static std::io::Result<std::fs::File> {
    static LOADAVG: std::sync::OnceLock<std::io::Result<std::fs::File>> = std::sync::OnceLock::new();
    LOADAVG.get_or_init(|| std::fs::File::open("/proc/loadavg"))
}

/// An fd and the poll(2) events that make it worth waking for.
pub type WaitSource = (RawFd, libc::c_short);

/// A source that is not there: poll(2) skips a negative fd.
pub(crate) const NO_SOURCE: WaitSource = (-1, 0);

/// Resets a connected TCP socket (the peer sees `ECONNRESET`) and leaves the
/// fd open: `SO_LINGER` 0, then a connect to `AF_UNSPEC`, which disconnects
/// with a reset where a close would.
pub(crate) fn reset_tcp(socket: RawFd) -> Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a live fd and a linger struct of the size given.
    check("setsockopt(SO_LINGER)", unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    // SAFETY: all-zero is a valid sockaddr; AF_UNSPEC is all a disconnect reads.
    let mut unspec: libc::sockaddr = unsafe { std::mem::zeroed() };
    unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: a live fd and a socket address of the size given.
    check("connect(AF_UNSPEC)", unsafe {
        libc::connect(socket, &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t)
    })
}

/// Closes the open socket behind `fd` (its port or name is free again and
/// its peers see it closed) while the fd number stays open, on a
/// placeholder, until its owner closes it: so an epoll set that watches the
/// number never sees it reused by another file, as the JDK's `preClose`
/// keeps a registered channel's fd. The kernel drops the socket from every
/// epoll set as it closes; a later `EPOLL_CTL_DEL` of the number finds
/// nothing (`ENOENT`).
pub(crate) fn pre_close(fd: RawFd) -> Result<()> {
    let placeholder = eventfd()?;
    // SAFETY: both fds are live; `fd` stays open, now on the placeholder's
    // file, and its owner closes it as before.
    check("dup3(pre-close)", unsafe { libc::dup3(placeholder.as_raw_fd(), fd, libc::O_CLOEXEC) })
}

/// `recv(2)` into `out`; with `libc::MSG_DONTWAIT` in `flags` it never
/// sleeps, without it it sleeps on a blocking-mode socket until something
/// arrives, the peer ends or the socket's reading is shut down.
pub(crate) fn recv(socket: RawFd, out: &mut [u8], flags: libc::c_int) -> std::io::Result<usize> {
    // SAFETY: a live socket and a buffer of the length given.
    let n = unsafe { libc::recv(socket, out.as_mut_ptr().cast(), out.len(), flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `send(2)` of `data` with `flags` (and `MSG_NOSIGNAL`: a closed peer is an
/// `EPIPE`, never a signal).
pub(crate) fn send(socket: RawFd, data: &[u8], flags: libc::c_int) -> std::io::Result<usize> {
    // SAFETY: a live socket and a buffer of the length given.
    let n = unsafe { libc::send(socket, data.as_ptr().cast(), data.len(), flags | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Shuts a socket's reading down: a thread asleep in its `recv` wakes with 0.
pub(crate) fn shutdown_read(socket: RawFd) -> Result<()> {
    // SAFETY: a live socket; no memory is passed.
    check("shutdown(SHUT_RD)", unsafe { libc::shutdown(socket, libc::SHUT_RD) })
}

/// The bytes waiting to be read on a socket or pipe (`FIONREAD`): for a TCP
/// socket its received stream bytes, for a UDP socket the next datagram's.
pub(crate) fn bytes_readable(fd: RawFd) -> Result<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: a live fd and an int for the count, as FIONREAD writes.
    check("ioctl(FIONREAD)", unsafe { libc::ioctl(fd, libc::FIONREAD, &mut count as *mut libc::c_int) })?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// The index of network interface `name` (an IPv6 scope).
///
/// # Errors
/// `InvalidArgument` naming it when the host has no such interface.
pub(crate) fn interface_index(name: &str) -> Result<u32> {
    let unknown = || Error::InvalidArgument(format!("no network interface '{name}'"));
    let name = std::ffi::CString::new(name).map_err(|_| unknown())?;
    // SAFETY: a NUL-terminated string that lives for the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// When a blocking operation must give up.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Option<Instant>,
    timeout: Duration,
}

impl Deadline {
    /// `None` waits forever.
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        match timeout {
            Some(_) => Deadline::after_from(Instant::now(), timeout),
            None => Deadline::FOREVER,
        }
    }

    /// As `after`, from `now`: a reading of the clock the caller has anyway
    /// (a read costs 40 ns on a virtual machine's TSC, a tenth of an empty `selectNow`).
    pub(crate) fn after_from(now: Instant, timeout: Option<Duration>) -> Self {
        match timeout {
            Some(t) => Deadline { at: now.checked_add(t), timeout: t },
            None => Deadline::FOREVER,
        }
    }

    const FOREVER: Deadline = Deadline { at: None, timeout: Duration::MAX };

    /// Whether it has passed.
    pub(crate) fn expired(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// Whether it had passed at `now`.
    pub(crate) fn expired_at(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| now >= at)
    }

    /// The poll(2) timeout that is left: -1 for forever, 0 once expired.
    pub(crate) fn poll_millis(&self) -> libc::c_int {
        match self.at {
            None => -1,
            Some(_) => self.poll_millis_at(Instant::now()),
        }
    }

    /// The poll(2) timeout that was left at `now`.
    pub(crate) fn poll_millis_at(&self, now: Instant) -> libc::c_int {
        match self.at {
            None => -1,
            Some(at) => {
                let left = at.saturating_duration_since(now);
                // Round up so a sub-millisecond remainder still waits: 0 only once expired.
                left.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int
            }
        }
    }

    /// The instant it expires, or `None` for never.
    pub(crate) fn instant(&self) -> Option<Instant> {
        self.at
    }

    pub(crate) fn timed_out(&self, op: &'static str) -> Error {
        Error::TimedOut { op, timeout: self.timeout }
    }

    /// Calls `sleep` with the poll(2) or epoll timeout left until it returns
    /// what woke it. `None` is a wake-up for nothing (a signal, or a timeout
    /// that rounding made end early), which fails with `TimedOut` (naming
    /// `op`) once no time is left.
    pub(crate) fn sleep_until<T>(
        &self,
        op: &'static str,
        mut sleep: impl FnMut(libc::c_int) -> Result<Option<T>>,
    ) -> Result<T> {
        loop {
            let millis = self.poll_millis();
            if let Some(woke) = sleep(millis)? {
                return Ok(woke);
            }
            if millis == 0 {
                return Err(self.timed_out(op));
            }
        }
    }
}

/// Waits until at least one of `fds` is readable; returns which are.
/// Fails with `TimedOut` (naming `op`) once the deadline passes.
pub(crate) fn wait_readable<const N: usize>(
    op: &'static str,
    fds: [RawFd; N],
    deadline: Deadline,
) -> Result<[bool; N]> {
    wait_for(op, fds.map(|fd| (fd, libc::POLLIN)), deadline)
}

/// Waits until at least one of `fds` has one of its poll(2) `events` (or an
/// error or hang-up); returns which do.
pub(crate) fn wait_for<const N: usize>(
    op: &'static str,
    fds: [(RawFd, libc::c_short); N],
    deadline: Deadline,
) -> Result<[bool; N]> {
    let mut pollfds = fds.map(|(fd, events)| libc::pollfd { fd, events, revents: 0 });
    deadline.sleep_until(op, |millis| {
        // SAFETY: pollfds is a live array of N pollfd structs.
        match unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, millis) } {
            -1 if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => Ok(None),
            -1 => Err(Error::last_os("poll")),
            0 => Ok(None),
            _ => Ok(Some(pollfds.map(|p| p.revents != 0))),
        }
    })
}

/// Sets the int socket option `name` of `level` on `fd` to `value`; `op` names it in errors.
pub(crate) fn set_int_option(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    op: &'static str,
) -> Result<()> {
    // SAFETY: a live fd and an int of the size given.
    check(op, unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_readable_times_out_on_a_silent_fd() {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two ends of the pipe.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let started = Instant::now();
        let err = wait_readable("test wait", [fds[0]], Deadline::after(Some(Duration::from_millis(30))))
            .unwrap_err();
        assert!(matches!(err, Error::TimedOut { op: "test wait", .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(30));

        // SAFETY: writing one byte from a live buffer to the pipe's write end.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        let ready = wait_readable("test wait", [fds[1], fds[0]], Deadline::after(None)).unwrap();
        assert_eq!(ready, [false, true]);
        // SAFETY: closing the pipe this test opened.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1])
        };
    }

    /// A select loop reads the clock only after a sleep: with a remainder left
    /// at its last reading it must sleep, not poll with a zero timeout and
    /// see the same reading again.
    #[test]
    fn a_deadline_not_yet_passed_leaves_at_least_a_millisecond_to_wait() {
        let now = Instant::now();
        let deadline = Deadline::after_from(now, Some(Duration::from_nanos(500)));
        assert!(!deadline.expired_at(now));
        assert_eq!(deadline.poll_millis_at(now), 1);
        assert_eq!(deadline.poll_millis_at(now + Duration::from_nanos(500)), 0);
        assert_eq!(Deadline::after_from(now, Some(Duration::from_micros(1500))).poll_millis_at(now), 2);
        assert_eq!(Deadline::after_from(now, None).poll_millis_at(now), -1);
    }
}
