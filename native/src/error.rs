//! The one error type of the engine. Every verbs, rdma_cm and syscall failure
//! becomes a variant that names the operation; the JNI and C layers each map it
//! in exactly one place (`bindings::jni`'s `exception_class`, `bindings::ffi`'s `RnioStatus::of`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Result of every fallible engine operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An engine failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host has no usable RDMA device (or no kernel RDMA support at all).
    #[error("no RDMA device: {0}")]
    NoDevice(String),

    /// A verbs, rdma_cm or system call failed with an errno.
    #[error("{op} failed: {source}")]
    Os {
        /// The call that failed, e.g. `ibv_create_cq`.
        op: &'static str,
        /// The errno it reported.
        #[source]
        source: io::Error,
    },

    /// A blocking operation did not complete in time.
    #[error("{op} timed out after {timeout:?}")]
    TimedOut {
        /// What was being waited for.
        op: &'static str,
        /// The time allowed.
        timeout: Duration,
    },

    /// Nothing listens at the address (the connection request was rejected).
    #[error("connection to {0} refused")]
    ConnectionRefused(SocketAddr),

    /// The listener grants this peer two-sided sends only, not a ring of its
    /// memory (it is not one of the listener's ring peers).
    #[error("{0} grants two-sided sends only (no ring): connect with the sends path")]
    SendsOnly(SocketAddr),

    /// No RDMA route reaches the address.
    #[error("{addr} is unreachable over RDMA ({event})")]
    Unreachable {
        /// The destination.
        addr: SocketAddr,
        /// The connection manager event that reported it.
        event: &'static str,
    },

    /// The shm medium was asked for a peer on another host.
    #[error("shm reaches processes on this host only, not {0}")]
    NotLocal(SocketAddr),

    /// The connection manager reported an event that the current step cannot accept.
    #[error("{op}: unexpected connection event {event} (status {status})")]
    UnexpectedEvent {
        /// The step that was waiting.
        op: &'static str,
        /// The event that came instead.
        event: &'static str,
        /// The event's status field (a negative errno or a reject reason).
        status: i32,
    },

    /// A work request completed with an error status.
    #[error("{op} completed with {status} (vendor error {vendor_err:#x})")]
    Completion {
        /// The kind of work request.
        op: &'static str,
        /// The work completion status, as `ibv_wc_status_str` names it.
        status: String,
        /// The device-specific error code.
        vendor_err: u32,
    },

    /// The device reported that the connection's port went down, or that it
    /// failed the queue pair or itself (an asynchronous event).
    #[error("connection failed: {0}")]
    DeviceFailed(String),

    /// The peer's queue pair stopped answering: a keepalive probe's retries
    /// ran out (its process died, its disconnect request lost on the way).
    #[error("connection to {peer} timed out: the peer stopped answering ({status})")]
    PeerSilent {
        /// The peer.
        peer: SocketAddr,
        /// The failed probe's completion.
        status: String,
    },

    /// The socket was closed by another thread while this one used it.
    #[error("closed while {0} was in progress")]
    Closed(&'static str),

    /// The connection failed before (the first error was reported then).
    #[error("connection failed earlier: {0}")]
    Failed(String),

    /// A message larger than one receive buffer.
    #[error("message of {len} bytes exceeds the maximum message size of {max} bytes")]
    MessageTooLarge {
        /// The message length.
        len: usize,
        /// The largest message a connection carries.
        max: usize,
    },

    /// A caller passed an argument the engine cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The peer closed the connection; nothing more can be sent.
    #[error("connection closed by the peer")]
    Disconnected,

    /// The peer reset the connection (an abortive close, `SO_LINGER` 0):
    /// every later read and write fails with this. The text is the JDK's.
    #[error("Connection reset")]
    ConnectionReset,

    /// A datagram's destination answered that nothing listens there (ICMP
    /// port unreachable), reported to a connected datagram socket.
    #[error("ICMP Port Unreachable")]
    PortUnreachable,

    /// The peer broke the ring protocol (a corrupt or forged record, credit or tail).
    #[error("protocol violation by the peer: {0}")]
    Violation(#[from] crate::media::ring::Violation),
}

impl Error {
    /// The calling thread's last errno, attributed to `op`.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Error::Os { op, source: io::Error::last_os_error() }
    }

    /// An errno returned directly (as the verbs post calls do).
    pub(crate) fn from_errno(op: &'static str, errno: i32) -> Self {
        Error::Os { op, source: io::Error::from_raw_os_error(errno) }
    }

    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Turns the `-1`-and-errno convention of librdmacm and libc into a `Result`.
pub(crate) fn check(op: &'static str, ret: libc::c_int) -> Result<()> {
    if ret == -1 {
        Err(Error::last_os(op))
    } else {
        Ok(())
    }
}

/// Turns the return-the-errno convention of libibverbs into a `Result`.
pub(crate) fn check_errno(op: &'static str, ret: libc::c_int) -> Result<()> {
    match ret {
        0 => Ok(()),
        // Some providers return -1 and set errno instead of returning it.
        -1 => Err(Error::last_os(op)),
        errno => Err(Error::from_errno(op, errno.abs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_name_the_operation_and_the_errno() {
        let err = Error::from_errno("ibv_req_notify_cq", libc::ENOMEM);
        assert_eq!(err.errno(), Some(libc::ENOMEM));
        let text = err.to_string();
        assert!(text.starts_with("ibv_req_notify_cq failed: "), "{text}");
        assert!(text.contains("os error 12"), "{text}");
    }

    #[test]
    fn errno_conventions_are_both_understood() {
        assert!(check("rdma_listen", 0).is_ok());
        assert!(check_errno("ibv_req_notify_cq", 0).is_ok());
        assert_eq!(check_errno("ibv_resize_cq", libc::EINVAL).unwrap_err().errno(), Some(libc::EINVAL));
        assert_eq!(check_errno("ibv_resize_cq", -libc::EAGAIN).unwrap_err().errno(), Some(libc::EAGAIN));
    }

    #[test]
    fn errors_without_errno_say_so() {
        assert_eq!(Error::Disconnected.errno(), None);
        assert_eq!(
            Error::MessageTooLarge { len: 5000, max: 4096 }.to_string(),
            "message of 5000 bytes exceeds the maximum message size of 4096 bytes"
        );
    }
}
