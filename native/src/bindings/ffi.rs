//! The C ABI: the same engine as the Rust API, for C callers. cbindgen turns
//! this module into `rdmanio.h`.
//!
//! Conventions: every call returns an `rnio_status` (`RNIO_STATUS_OK` is 0) and
//! never unwinds; on failure `rnio_last_error` gives the calling thread's error
//! text. Listeners and connections are opaque handles that the caller closes
//! exactly once. Timeouts are in milliseconds; a negative one waits forever.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use super::{panic_text, timeout_millis};
use crate::{Connection, Error, Listener, Result, MAX_MESSAGE_SIZE};

/// The largest message `rnio_send` carries.
pub const RNIO_MAX_MESSAGE_SIZE: usize = 4096;
const _: () = assert!(RNIO_MAX_MESSAGE_SIZE == MAX_MESSAGE_SIZE);

/// The outcome of a C ABI call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RnioStatus {
    /// Success.
    Ok = 0,
    /// The host has no RDMA device.
    NoDevice,
    /// A null pointer, a bad address or a buffer that cannot hold the message.
    InvalidArgument,
    /// The timeout passed.
    TimedOut,
    /// Nothing listens at the address.
    ConnectionRefused,
    /// No RDMA route reaches the address.
    Unreachable,
    /// The message exceeds `RNIO_MAX_MESSAGE_SIZE` (or the receive buffer).
    MessageTooLarge,
    /// The peer closed the connection.
    Disconnected,
    /// End of stream: the peer closed and every message was received.
    EndOfStream,
    /// Any other failure (see `rnio_last_error`).
    Failed,
}

impl RnioStatus {
    /// The status that reports `err` (the one mapping from engine errors to C).
    fn of(err: &Error) -> RnioStatus {
        match err {
            Error::NoDevice(_) => RnioStatus::NoDevice,
            Error::InvalidArgument(_) => RnioStatus::InvalidArgument,
            Error::TimedOut { .. } => RnioStatus::TimedOut,
            Error::ConnectionRefused(_) | Error::SendsOnly(_) => RnioStatus::ConnectionRefused,
            Error::Unreachable { .. } | Error::NotLocal(_) => RnioStatus::Unreachable,
            Error::MessageTooLarge { .. } => RnioStatus::MessageTooLarge,
            Error::Disconnected | Error::ConnectionReset => RnioStatus::Disconnected,
            Error::Os { .. }
            | Error::UnexpectedEvent { .. }
            | Error::Completion { .. }
            | Error::Violation(_)
            | Error::Closed(_)
            | Error::PortUnreachable
            | Error::DeviceFailed(_)
            | Error::PeerSilent { .. }
            | Error::Failed(_) => RnioStatus::Failed,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs one C call: maps its error, or a panic, to a status and records the text.
fn guarded(call: impl FnOnce() -> Result<RnioStatus>) -> RnioStatus {
    let (status, text) = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(status)) => return status,
        Ok(Err(err)) => (RnioStatus::of(&err), err.to_string()),
        Err(panic) => (RnioStatus::Failed, format!("internal error: {}", panic_text(panic.as_ref()))),
    };
    LAST_ERROR.with(|last| *last.borrow_mut() = text);
    status
}

fn timeout(millis: c_int) -> Option<Duration> {
    timeout_millis(millis.into())
}

/// # Safety
/// `ip` is null or a NUL-terminated string.
unsafe fn socket_addr(ip: *const c_char, port: u16) -> Result<SocketAddr> {
    if ip.is_null() {
        return Err(Error::InvalidArgument("null IP address".into()));
    }
    super::socket_addr(&unsafe { CStr::from_ptr(ip) }.to_string_lossy(), port.into())
}

/// # Safety
/// `ptr` is null or a handle from this API that was not closed.
unsafe fn handle<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    unsafe { ptr.as_mut() }.ok_or_else(|| Error::InvalidArgument(format!("null {what}")))
}

/// Stores `value` at `out`, or fails on a null `out` (dropping `value`).
///
/// # Safety
/// `out` is null or valid for a write.
unsafe fn store<T>(out: *mut T, value: T) -> Result<RnioStatus> {
    if out.is_null() {
        return Err(Error::InvalidArgument("null out-pointer".into()));
    }
    unsafe { out.write(value) };
    Ok(RnioStatus::Ok)
}

/// Copies `text` NUL-terminated into `buf` (truncated to `capacity`); returns
/// the full length, as snprintf does.
///
/// # Safety
/// `buf` is null or valid for `capacity` bytes.
unsafe fn copy_c_string(text: &str, buf: *mut c_char, capacity: usize) -> usize {
    if !buf.is_null() && capacity > 0 {
        let n = text.len().min(capacity - 1);
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr().cast(), buf, n);
            *buf.add(n) = 0;
        }
    }
    text.len()
}

/// Binds `ip`:`port` (port 0 picks one) and listens; `*out` receives the listener.
///
/// # Safety
/// `ip` is a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rnio_listen(
    ip: *const c_char,
    port: u16,
    backlog: c_int,
    out: *mut *mut Listener,
) -> RnioStatus {
    guarded(|| {
        let listener = Listener::bind(unsafe { socket_addr(ip, port)? }, backlog)?;
        unsafe { store(out, Box::into_raw(Box::new(listener))) }
    })
}

/// The port a listener is bound to (0 for a null listener).
///
/// # Safety
/// `listener` is null or an open listener.
#[no_mangle]
pub unsafe extern "C" fn rnio_listener_port(listener: *const Listener) -> u16 {
    unsafe { listener.as_ref() }.map_or(0, |l| l.local_addr().port())
}

/// Waits for a connection; `*out` receives it.
///
/// # Safety
/// `listener` is an open listener; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rnio_accept(
    listener: *mut Listener,
    timeout_ms: c_int,
    out: *mut *mut Connection,
) -> RnioStatus {
    guarded(|| {
        let conn = unsafe { handle(listener, "listener")? }.accept(timeout(timeout_ms))?;
        unsafe { store(out, Box::into_raw(Box::new(conn))) }
    })
}

/// Connects to a listener at `ip`:`port`; `*out` receives the connection.
///
/// # Safety
/// `ip` is a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rnio_connect(
    ip: *const c_char,
    port: u16,
    timeout_ms: c_int,
    out: *mut *mut Connection,
) -> RnioStatus {
    guarded(|| {
        let conn = Connection::connect(unsafe { socket_addr(ip, port)? }, timeout(timeout_ms))?;
        unsafe { store(out, Box::into_raw(Box::new(conn))) }
    })
}

/// Sends the `len` bytes at `data` as one message.
///
/// # Safety
/// `conn` is an open connection; `data` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn rnio_send(
    conn: *mut Connection,
    data: *const u8,
    len: usize,
    timeout_ms: c_int,
) -> RnioStatus {
    guarded(|| {
        let conn = unsafe { handle(conn, "connection")? };
        let message = match len {
            0 => &[][..],
            _ if data.is_null() => return Err(Error::InvalidArgument("null data".into())),
            _ => unsafe { std::slice::from_raw_parts(data, len) },
        };
        conn.send(message, timeout(timeout_ms))?;
        Ok(RnioStatus::Ok)
    })
}

/// Receives one message into `buf`; `*received` gets its length.
/// `RNIO_STATUS_END_OF_STREAM` once the peer has closed.
///
/// # Safety
/// `conn` is an open connection; `buf` is valid for `capacity` bytes;
/// `received` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rnio_recv(
    conn: *mut Connection,
    buf: *mut u8,
    capacity: usize,
    timeout_ms: c_int,
    received: *mut usize,
) -> RnioStatus {
    guarded(|| {
        let conn = unsafe { handle(conn, "connection")? };
        if buf.is_null() && capacity > 0 {
            return Err(Error::InvalidArgument("null buffer".into()));
        }
        let buf = match capacity {
            0 => &mut [][..],
            _ => unsafe { std::slice::from_raw_parts_mut(buf, capacity) },
        };
        match conn.recv(buf, timeout(timeout_ms))? {
            Some(len) => unsafe { store(received, len) },
            None => Ok(RnioStatus::EndOfStream),
        }
    })
}

/// Sets how long a blocked send or receive polls the completion queue before
/// it sleeps (0: sleep at once, the default).
///
/// # Safety
/// `conn` is an open connection.
#[no_mangle]
pub unsafe extern "C" fn rnio_set_busy_poll(conn: *mut Connection, micros: u32) -> RnioStatus {
    guarded(|| {
        unsafe { handle(conn, "connection")? }.set_busy_poll(Duration::from_micros(micros.into()));
        Ok(RnioStatus::Ok)
    })
}

/// The connection's local queue pair number (0 for a null connection).
///
/// # Safety
/// `conn` is null or an open connection.
#[no_mangle]
pub unsafe extern "C" fn rnio_qp_num(conn: *const Connection) -> u32 {
    unsafe { conn.as_ref() }.map_or(0, |conn| conn.qp_num())
}

/// Copies the name of the connection's RDMA device into `buf`; returns its length.
///
/// # Safety
/// `conn` is an open connection; `buf` is null or valid for `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn rnio_device_name(
    conn: *const Connection,
    buf: *mut c_char,
    capacity: usize,
) -> usize {
    let name = catch_unwind(AssertUnwindSafe(|| {
        unsafe { conn.as_ref() }.map(|conn| conn.device_name()).unwrap_or_default()
    }));
    unsafe { copy_c_string(&name.unwrap_or_default(), buf, capacity) }
}

/// Copies the calling thread's last error text into `buf`; returns its length.
///
/// # Safety
/// `buf` is null or valid for `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn rnio_last_error(buf: *mut c_char, capacity: usize) -> usize {
    LAST_ERROR.with(|last| unsafe { copy_c_string(&last.borrow(), buf, capacity) })
}

/// Closes a connection: the peer receives the message in flight, then end of
/// stream. Returns within 0.2 s; what the wire holds up longer is finished by
/// a thread of the library's (while the process lives). Null is ignored.
///
/// # Safety
/// `conn` is null or an open connection, not used again.
#[no_mangle]
pub unsafe extern "C" fn rnio_connection_close(conn: *mut Connection) {
    if !conn.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(conn) })));
    }
}

/// Closes a listener. Null is ignored.
///
/// # Safety
/// `listener` is null or an open listener, not used again.
#[no_mangle]
pub unsafe extern "C" fn rnio_listener_close(listener: *mut Listener) {
    if !listener.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(listener) })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::ptr;

    fn last_error() -> String {
        let mut buf = [0 as c_char; 256];
        let len = unsafe { rnio_last_error(buf.as_mut_ptr(), buf.len()) };
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
        assert_eq!(len, text.len());
        text
    }

    #[test]
    fn bad_arguments_are_reported_not_crashed_on() {
        let mut conn = ptr::null_mut();
        let ip = CString::new("not-an-ip").unwrap();
        assert_eq!(unsafe { rnio_connect(ip.as_ptr(), 1, 0, &mut conn) }, RnioStatus::InvalidArgument);
        assert_eq!(last_error(), "invalid argument: 'not-an-ip' is not an IP address");
        assert!(conn.is_null());

        assert_eq!(unsafe { rnio_connect(ptr::null(), 1, 0, &mut conn) }, RnioStatus::InvalidArgument);
        assert_eq!(unsafe { rnio_send(ptr::null_mut(), ptr::null(), 0, 0) }, RnioStatus::InvalidArgument);
        assert_eq!(last_error(), "invalid argument: null connection");
        let mut len = 0;
        assert_eq!(
            unsafe { rnio_recv(ptr::null_mut(), ptr::null_mut(), 0, 0, &mut len) },
            RnioStatus::InvalidArgument
        );
        assert_eq!(unsafe { rnio_qp_num(ptr::null()) }, 0);
        assert_eq!(unsafe { rnio_listener_port(ptr::null()) }, 0);
        unsafe { rnio_connection_close(ptr::null_mut()) };
        unsafe { rnio_listener_close(ptr::null_mut()) };
    }

    #[test]
    fn long_texts_are_truncated_with_their_full_length_returned() {
        let mut buf = [1 as c_char; 4];
        assert_eq!(unsafe { copy_c_string("rxe0-long", buf.as_mut_ptr(), buf.len()) }, 9);
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(), "rxe");
        assert_eq!(unsafe { copy_c_string("x", ptr::null_mut(), 0) }, 1);
    }

    #[test]
    fn panics_become_a_failed_status_with_their_message() {
        assert_eq!(guarded(|| panic!("boom")), RnioStatus::Failed);
        assert_eq!(last_error(), "internal error: boom");
    }
}
