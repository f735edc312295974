//! librdmacm connection management: event channels, identifiers and the events
//! they report. Addresses are plain IP socket addresses, as for TCP.

use std::ffi::CStr;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};

use rdma_sys::*;

use crate::error::{check, Error, Result};
use crate::rdma::verbs::Device;
use crate::sys::sockaddr::{socket_addr, SockAddr};
use crate::sys::{self, Deadline};

/// An rdma_cm event channel. Its fd is non-blocking and becomes readable when an
/// event for one of its identifiers is pending.
pub(crate) struct EventChannel(NonNull<rdma_event_channel>);

// SAFETY: librdmacm event channels are plain fds; the engine uses each from one
// thread at a time.
unsafe impl Send for EventChannel {}
// SAFETY: its only operation through a shared reference, rdma_get_cm_event,
// reads an event from the channel's fd, which the kernel serializes; a
// channel is shared by the steps of one connect (`Resolving`, `Endpoint`),
// which use it in turn, never at once.
unsafe impl Sync for EventChannel {}

impl EventChannel {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no arguments; a null result sets errno.
        let channel = NonNull::new(unsafe { rdma_create_event_channel() })
            .map(EventChannel)
            .ok_or_else(|| Error::last_os("rdma_create_event_channel"))?;
        sys::set_nonblocking("fcntl(rdma_cm channel)", channel.fd())?;
        Ok(channel)
    }

    pub(crate) fn as_ptr(&self) -> *mut rdma_event_channel {
        self.0.as_ptr()
    }

    pub(crate) fn fd(&self) -> RawFd {
        // SAFETY: the channel is live while self is.
        unsafe { (*self.0.as_ptr()).fd }
    }

    /// The next pending event, without waiting.
    pub(crate) fn try_next(&self) -> Result<Option<CmEvent>> {
        let mut event = ptr::null_mut();
        // SAFETY: the channel is live and non-blocking; event is a valid out-pointer.
        if unsafe { rdma_get_cm_event(self.0.as_ptr(), &mut event) } == 0 {
            return Ok(NonNull::new(event).map(CmEvent));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Ok(None),
            _ => Err(Error::last_os("rdma_get_cm_event")),
        }
    }

    /// Waits for the next event; `op` names the step for a timeout error.
    pub(crate) fn next(&self, op: &'static str, deadline: Deadline) -> Result<CmEvent> {
        loop {
            if let Some(event) = self.try_next()? {
                return Ok(event);
            }
            sys::wait_readable(op, [self.fd()], deadline)?;
        }
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: every identifier on the channel was destroyed before it.
        unsafe { rdma_destroy_event_channel(self.0.as_ptr()) }
    }
}

/// An event from the connection manager; acknowledged when dropped. An
/// identifier cannot be destroyed or migrated while its events are unacknowledged.
pub(crate) struct CmEvent(NonNull<rdma_cm_event>);

impl CmEvent {
    pub(crate) fn kind(&self) -> rdma_cm_event_type::Type {
        // SAFETY: the event is live until acknowledged in drop.
        unsafe { (*self.0.as_ptr()).event }
    }

    /// Zero, a negative errno, or a reject reason, depending on the event.
    pub(crate) fn status(&self) -> i32 {
        // SAFETY: as above.
        unsafe { (*self.0.as_ptr()).status }
    }

    /// The identifier the event is about (for a connect request: the new one).
    pub(crate) fn id(&self) -> *mut rdma_cm_id {
        // SAFETY: as above.
        unsafe { (*self.0.as_ptr()).id }
    }

    pub(crate) fn name(&self) -> &'static str {
        event_name(self.kind())
    }

    /// The private data of a connect request or of an established connection
    /// (the peer's hello); valid until the event is acknowledged.
    pub(crate) fn private_data(&self) -> &[u8] {
        // SAFETY: for connection events `param.conn` is the active member, and its
        // data lives until rdma_ack_cm_event, which runs when self drops.
        unsafe {
            let conn = &(*self.0.as_ptr()).param.conn;
            if conn.private_data.is_null() {
                return &[];
            }
            std::slice::from_raw_parts(conn.private_data.cast(), conn.private_data_len.into())
        }
    }

    /// The error that this event means for the step `op` that did not expect it.
    pub(crate) fn unexpected(&self, op: &'static str) -> Error {
        Error::UnexpectedEvent { op, event: self.name(), status: self.status() }
    }
}

impl Drop for CmEvent {
    fn drop(&mut self) {
        // SAFETY: the event came from rdma_get_cm_event and is acknowledged once.
        unsafe { rdma_ack_cm_event(self.0.as_ptr()) };
    }
}

/// The name librdmacm gives an event type, e.g. "RDMA_CM_EVENT_ESTABLISHED".
pub(crate) fn event_name(kind: rdma_cm_event_type::Type) -> &'static str {
    // SAFETY: rdma_event_str returns a static string for any value.
    unsafe { CStr::from_ptr(rdma_event_str(kind)) }.to_str().unwrap_or("RDMA_CM_EVENT_?")
}

/// An rdma_cm identifier: the connection-manager side of a listener or a
/// connection, with the queue pair once one is created on it.
pub(crate) struct CmId(NonNull<rdma_cm_id>);

// SAFETY: see EventChannel.
unsafe impl Send for CmId {}

impl CmId {
    /// A reliable-connected (TCP port space) identifier reporting to `channel`.
    pub(crate) fn new(channel: &EventChannel) -> Result<Self> {
        let mut id = ptr::null_mut();
        // SAFETY: channel is live; id is a valid out-pointer.
        check("rdma_create_id", unsafe {
            rdma_create_id(channel.as_ptr(), &mut id, ptr::null_mut(), rdma_port_space::RDMA_PS_TCP)
        })?;
        Ok(CmId(NonNull::new(id).expect("rdma_create_id succeeded without an id")))
    }

    /// Takes ownership of an identifier that librdmacm created for a connect request.
    ///
    /// # Safety
    /// `id` must come from an acknowledged connect-request event and have no other owner.
    pub(crate) unsafe fn from_request(id: *mut rdma_cm_id) -> Self {
        CmId(NonNull::new(id).expect("connect request without an id"))
    }

    /// The device the identifier is bound to (none before address resolution).
    pub(crate) fn device(&self) -> Option<Device> {
        // SAFETY: the identifier is live; librdmacm keeps device contexts open
        // for the life of the process.
        unsafe { Device::from_ptr((*self.0.as_ptr()).verbs) }
    }

    /// The device port the identifier is bound to (known with its device).
    pub(crate) fn port_num(&self) -> u8 {
        // SAFETY: the identifier is live.
        unsafe { (*self.0.as_ptr()).port_num }
    }

    /// The queue pair created on the identifier (null before `rdma_create_qp`).
    pub(crate) fn qp(&self) -> *mut ibv_qp {
        // SAFETY: the identifier is live.
        unsafe { (*self.0.as_ptr()).qp }
    }

    /// The bound local address (with the port the kernel chose for port 0).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the identifier is live; the union holds a sockaddr_storage.
        socket_addr(unsafe { &(*self.0.as_ptr()).route.addr.src_addr_union.src_storage })
    }

    /// The peer's address, once resolved or requested.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as above.
        socket_addr(unsafe { &(*self.0.as_ptr()).route.addr.dst_addr_union.dst_storage })
    }

    pub(crate) fn bind(&self, addr: SocketAddr) -> Result<()> {
        let mut storage = SockAddr::from(addr);
        // SAFETY: storage holds a valid sockaddr of the family it names.
        check("rdma_bind_addr", unsafe { rdma_bind_addr(self.0.as_ptr(), storage.as_mut_ptr()) })
    }

    pub(crate) fn listen(&self, backlog: i32) -> Result<()> {
        // SAFETY: the identifier is live and bound.
        check("rdma_listen", unsafe { rdma_listen(self.0.as_ptr(), backlog) })
    }

    /// Resolves `addr`, from the address (and port) `from` when given, else
    /// from the one the route picks.
    pub(crate) fn resolve_addr(
        &self,
        from: Option<SocketAddr>,
        addr: SocketAddr,
        timeout_ms: i32,
    ) -> Result<()> {
        let mut storage = SockAddr::from(addr);
        let mut source = from.map(SockAddr::from);
        let source_ptr = source.as_mut().map_or(ptr::null_mut(), |source| source.as_mut_ptr());
        // SAFETY: as in bind; a null source lets the route pick the local address.
        check("rdma_resolve_addr", unsafe {
            rdma_resolve_addr(self.0.as_ptr(), source_ptr, storage.as_mut_ptr(), timeout_ms)
        })
    }

    pub(crate) fn resolve_route(&self, timeout_ms: i32) -> Result<()> {
        // SAFETY: the identifier is live and its address resolved.
        check("rdma_resolve_route", unsafe { rdma_resolve_route(self.0.as_ptr(), timeout_ms) })
    }

    /// Creates the identifier's queue pair in `pd` (destroyed by `destroy_qp`).
    pub(crate) fn create_qp(&self, pd: *mut ibv_pd, attr: &mut ibv_qp_init_attr) -> Result<()> {
        // SAFETY: the identifier and pd are live; attr is a valid in/out struct.
        check("rdma_create_qp", unsafe { rdma_create_qp(self.0.as_ptr(), pd, attr) })
    }

    /// Destroys the queue pair, if one was created.
    pub(crate) fn destroy_qp(&self) {
        if !self.qp().is_null() {
            // SAFETY: the QP was created on this identifier and is destroyed once.
            unsafe { rdma_destroy_qp(self.0.as_ptr()) };
        }
    }

    pub(crate) fn connect(&self, param: &mut rdma_conn_param) -> Result<()> {
        // SAFETY: the identifier has a resolved route and a QP; param is valid.
        check("rdma_connect", unsafe { rdma_connect(self.0.as_ptr(), param) })
    }

    pub(crate) fn accept(&self, param: &mut rdma_conn_param) -> Result<()> {
        // SAFETY: the identifier came from a connect request and has a QP.
        check("rdma_accept", unsafe { rdma_accept(self.0.as_ptr(), param) })
    }

    /// Refuses a connect request, with `private_data` for the peer.
    pub(crate) fn reject(&self, private_data: &[u8]) -> Result<()> {
        // SAFETY: the identifier came from a connect request; the data is
        // copied before the call returns.
        check("rdma_reject", unsafe {
            rdma_reject(self.0.as_ptr(), private_data.as_ptr().cast(), private_data.len() as u8)
        })
    }

    /// Starts an orderly disconnect and moves the QP to the error state, which
    /// flushes its outstanding work requests.
    /// Disconnects; false when no disconnect request or reply could be sent
    /// (the identifier never connected, or is disconnected already).
    pub(crate) fn disconnect(&self) -> bool {
        // SAFETY: the identifier is live. Failing on an id that never connected is harmless.
        unsafe { rdma_disconnect(self.0.as_ptr()) == 0 }
    }

    /// Moves the identifier's future events to `channel`. All its events so far
    /// must be acknowledged.
    pub(crate) fn migrate(&self, channel: &EventChannel) -> Result<()> {
        // SAFETY: both are live.
        check("rdma_migrate_id", unsafe { rdma_migrate_id(self.0.as_ptr(), channel.as_ptr()) })
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: the identifier's QP was destroyed and its events acknowledged.
        if unsafe { rdma_destroy_id(self.0.as_ptr()) } != 0 {
            log::error!("rdma_destroy_id: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_come_from_librdmacm() {
        assert_eq!(event_name(rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED), "RDMA_CM_EVENT_ESTABLISHED");
        assert_eq!(event_name(rdma_cm_event_type::RDMA_CM_EVENT_REJECTED), "RDMA_CM_EVENT_REJECTED");
    }
}
