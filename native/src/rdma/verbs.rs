//! Typed wrappers around the verbs objects a connection uses. Each owning
//! wrapper owns exactly one object and releases it in `Drop`; a child holds its
//! parent (a memory region or shared receive queue its protection domain), so
//! no drop order rests on field order. Work requests and completions are
//! plain Rust values: `SendRequest` (built by its methods) goes to
//! `QueuePair::post_send`, and `CompletionQueue::poll` fills `Completion`s.
//!
//! Posting is safe: a request names its local bytes by region and range, so
//! the device reads or writes only registered memory the region owns. What
//! the type system does not see is the region outliving the work request:
//! every data path destroys its queue pair before its regions (see
//! `endpoint::Endpoint::shutdown`), which flushes what is still posted.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::mem::{self, MaybeUninit};
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdma_sys::*;

use crate::error::{check, check_errno, Error, Result};
use crate::sys;

/// Names of the RDMA devices on this host, e.g. `["rxe0"]`.
///
/// # Errors
/// `NoDevice` when there are none, or when the kernel has no RDMA support at all
/// (the normal case on a host without RDMA: libibverbs reports ENOSYS);
/// `Os` when the process has no fd left (libibverbs reports ENOSYS then too).
pub fn device_names() -> Result<Vec<String>> {
    let mut count = 0;
    // SAFETY: count is a valid out-pointer; the list is freed below.
    let list = unsafe { ibv_get_device_list(&mut count) };
    if list.is_null() {
        let cause = std::io::Error::last_os_error();
        // An fd of our own tells a process out of fds from a host without RDMA.
        if let Some(errno @ (libc::EMFILE | libc::ENFILE)) = sys::eventfd().err().and_then(|err| err.errno())
        {
            return Err(Error::from_errno("ibv_get_device_list", errno));
        }
        return Err(Error::NoDevice(match cause.raw_os_error() {
            Some(libc::ENOSYS) => format!("this kernel has no RDMA support ({cause})"),
            _ => format!("cannot list RDMA devices ({cause})"),
        }));
    }
    // SAFETY: list holds `count` valid device pointers until ibv_free_device_list.
    let names = unsafe {
        let names = (0..count as usize).map(|i| device_name(*list.add(i))).collect::<Vec<_>>();
        ibv_free_device_list(list);
        names
    };
    if names.is_empty() {
        return Err(Error::NoDevice("no RDMA device is configured on this host".into()));
    }
    Ok(names)
}

/// `Ok` when this host has an RDMA device, as `device_names` says until it
/// finds one, and from then on without asking: it costs a netlink exchange
/// and sysfs reads (about 35 syscalls under Soft-RoCE), which every RDMA connect and
/// listen paid. A device added later is still found; one removed later fails
/// the operation that needs it instead.
pub(crate) fn check_device() -> Result<()> {
    static FOUND: AtomicBool = AtomicBool::new(false);
    if !FOUND.load(Ordering::Relaxed) {
        device_names()?;
        FOUND.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// The name of `device` (`ibv_get_device_name`).
///
/// # Safety
/// `device` must be a live device pointer.
unsafe fn device_name(device: *mut ibv_device) -> String {
    let name = ibv_get_device_name(device);
    if name.is_null() {
        return String::from("?");
    }
    CStr::from_ptr(name).to_string_lossy().into_owned()
}

/// An open device (a verbs context), as librdmacm opens it: for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Device(NonNull<ibv_context>);

// SAFETY: a device context may be used from any thread; librdmacm never closes it.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    /// # Safety
    /// `context` is null or a device context that stays open for the life of
    /// the process (as an rdma_cm identifier's is).
    pub(crate) unsafe fn from_ptr(context: *mut ibv_context) -> Option<Device> {
        NonNull::new(context).map(Device)
    }

    fn as_ptr(self) -> *mut ibv_context {
        self.0.as_ptr()
    }

    /// The device's name, e.g. "rxe0".
    pub(crate) fn name(self) -> String {
        // SAFETY: the context is live (see `from_ptr`), and so is its device.
        unsafe { device_name((*self.as_ptr()).device) }
    }

    /// How many completions one queue of this device can hold.
    pub(crate) fn max_cq_entries(self) -> Result<u32> {
        // SAFETY: all-zero is a valid ibv_device_attr; the context is live.
        let mut attr: ibv_device_attr = unsafe { mem::zeroed() };
        check_errno("ibv_query_device", unsafe { ibv_query_device(self.as_ptr(), &mut attr) })?;
        Ok(attr.max_cqe as u32)
    }

    /// The fd that becomes readable when an asynchronous event waits.
    pub(crate) fn async_fd(self) -> RawFd {
        // SAFETY: the context is live (see `from_ptr`); the field is set at open.
        unsafe { (*self.as_ptr()).async_fd }
    }

    /// Waits for the device's next asynchronous event (`ibv_get_async_event`):
    /// one thread per device reads them (`device_events`).
    pub(crate) fn next_async_event(self) -> Result<AsyncEvent> {
        let mut raw = MaybeUninit::<ibv_async_event>::uninit();
        // SAFETY: the context is live; raw is a valid out-pointer, filled on success.
        check("ibv_get_async_event", unsafe { ibv_get_async_event(self.as_ptr(), raw.as_mut_ptr()) })?;
        Ok(AsyncEvent { raw })
    }
}

/// An asynchronous event of a device, acknowledged when dropped: until then,
/// destroying the queue pair it names waits, so the pointer stays that queue
/// pair's. Kept uninterpreted (`MaybeUninit`): a newer kernel may report an
/// event type the bindings' Rust enum has no value for.
pub(crate) struct AsyncEvent {
    raw: MaybeUninit<ibv_async_event>,
}

/// What an asynchronous event reports, as far as connections care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AsyncEventKind {
    /// A port left the active state (its link went down).
    PortDown(u8),
    /// The device failed a queue pair (`IBV_EVENT_QP_FATAL`, `_REQ_ERR`, `_ACCESS_ERR`).
    QueuePairFailed(*mut ibv_qp),
    /// The device itself failed: every queue pair on it is gone.
    DeviceFatal,
    /// Anything else (port active, path migration, SRQ limits, ...).
    Other,
}

impl AsyncEvent {
    /// The event's type number: read as an integer, since a newer kernel may
    /// report types the bindings' enum does not have.
    fn type_number(&self) -> u32 {
        // SAFETY: ibv_get_async_event filled the struct; the field is a C
        // enum, 32 bits wide, read as the integer it is.
        unsafe { ptr::addr_of!((*self.raw.as_ptr()).event_type).cast::<u32>().read() }
    }

    /// What the event reports.
    pub(crate) fn kind(&self) -> AsyncEventKind {
        const QP_FATAL: u32 = ibv_event_type::IBV_EVENT_QP_FATAL as u32;
        const QP_REQ_ERR: u32 = ibv_event_type::IBV_EVENT_QP_REQ_ERR as u32;
        const QP_ACCESS_ERR: u32 = ibv_event_type::IBV_EVENT_QP_ACCESS_ERR as u32;
        const PORT_ERR: u32 = ibv_event_type::IBV_EVENT_PORT_ERR as u32;
        const DEVICE_FATAL: u32 = ibv_event_type::IBV_EVENT_DEVICE_FATAL as u32;
        // SAFETY: filled by ibv_get_async_event; the union member read is
        // the one the event type says is set.
        unsafe {
            let element = &(*self.raw.as_ptr()).element;
            match self.type_number() {
                QP_FATAL | QP_REQ_ERR | QP_ACCESS_ERR => AsyncEventKind::QueuePairFailed(element.qp),
                PORT_ERR => AsyncEventKind::PortDown(element.port_num as u8),
                DEVICE_FATAL => AsyncEventKind::DeviceFatal,
                _ => AsyncEventKind::Other,
            }
        }
    }

    /// The name libibverbs gives the event, e.g. "local catastrophic error".
    pub(crate) fn name(&self) -> String {
        let number = self.type_number();
        if number > ibv_event_type::IBV_EVENT_WQ_FATAL as u32 {
            return format!("asynchronous event {number}");
        }
        // SAFETY: the value is one of the enum's (checked above), for which
        // ibv_event_type_str returns a static string.
        unsafe {
            let kind = ptr::addr_of!((*self.raw.as_ptr()).event_type).read();
            CStr::from_ptr(ibv_event_type_str(kind)).to_string_lossy().into_owned()
        }
    }
}

impl Drop for AsyncEvent {
    fn drop(&mut self) {
        // SAFETY: the event came from ibv_get_async_event and is acknowledged once.
        unsafe { ibv_ack_async_event(self.raw.as_mut_ptr()) };
    }
}

/// A protection domain (`ibv_alloc_pd`).
pub(crate) struct ProtectionDomain(NonNull<ibv_pd>);

// SAFETY (for the three wrappers here): each owns its verbs object exclusively,
// and libibverbs objects may be used from any thread, one call at a time.
unsafe impl Send for ProtectionDomain {}
unsafe impl Send for CompletionQueue {}
unsafe impl Send for MemoryRegion {}
// SAFETY: verbs calls on one domain or one SRQ from several threads are safe
// (libibverbs serialises them); the wrappers hold no other state.
unsafe impl Sync for ProtectionDomain {}
unsafe impl Send for SharedReceiveQueue {}
unsafe impl Sync for SharedReceiveQueue {}

impl ProtectionDomain {
    pub(crate) fn new(device: Device) -> Result<Self> {
        // SAFETY: the device is live for the life of the process.
        NonNull::new(unsafe { ibv_alloc_pd(device.as_ptr()) })
            .map(ProtectionDomain)
            .ok_or_else(|| Error::last_os("ibv_alloc_pd"))
    }

    pub(super) fn as_ptr(&self) -> *mut ibv_pd {
        self.0.as_ptr()
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: the domain is live and everything allocated in it is gone.
        let ret = unsafe { ibv_dealloc_pd(self.0.as_ptr()) };
        if ret != 0 {
            log::error!("ibv_dealloc_pd: errno {ret}; the domain leaks");
        }
    }
}

/// A shared receive queue (`ibv_create_srq`): receives that any queue pair
/// created with it consumes.
pub(crate) struct SharedReceiveQueue {
    srq: NonNull<ibv_srq>,
    // Dropped after the queue (see `Drop`).
    pd: Arc<ProtectionDomain>,
}

impl SharedReceiveQueue {
    /// A queue of up to `entries` receives of one scatter entry each.
    pub(crate) fn new(pd: &Arc<ProtectionDomain>, entries: u32) -> Result<Self> {
        // SAFETY: all-zero is a valid ibv_srq_init_attr.
        let mut attr: ibv_srq_init_attr = unsafe { mem::zeroed() };
        attr.attr.max_wr = entries;
        attr.attr.max_sge = 1;
        // SAFETY: the domain is live; attr is valid for the call.
        let srq = unsafe { ibv_create_srq(pd.as_ptr(), &mut attr) };
        let srq = NonNull::new(srq).ok_or_else(|| Error::last_os("ibv_create_srq"))?;
        Ok(SharedReceiveQueue { srq, pd: Arc::clone(pd) })
    }

    /// The domain of the queue pairs that may use it.
    pub(crate) fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    pub(super) fn as_ptr(&self) -> *mut ibv_srq {
        self.srq.as_ptr()
    }

    /// Posts one receive into `len` bytes at `offset` of `region`, identified
    /// by `wr_id` in its completion.
    pub(crate) fn post(&self, wr_id: u64, region: &MemoryRegion, offset: usize, len: usize) -> Result<()> {
        let mut sge = region.sge(offset, len);
        let mut wr = ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad = ptr::null_mut();
        // SAFETY: the queue is live; wr and sge are valid for the call; the
        // range is inside the registered region (see the module comment).
        check_errno("ibv_post_srq_recv", unsafe { ibv_post_srq_recv(self.as_ptr(), &mut wr, &mut bad) })
    }
}

impl Drop for SharedReceiveQueue {
    fn drop(&mut self) {
        // SAFETY: no queue pair uses the SRQ any more.
        let ret = unsafe { ibv_destroy_srq(self.as_ptr()) };
        if ret != 0 {
            log::error!("ibv_destroy_srq: errno {ret}; the queue leaks");
        }
    }
}

/// A completion queue with its own completion channel, whose fd becomes readable
/// when the armed queue receives a completion.
pub(crate) struct CompletionQueue {
    cq: NonNull<ibv_cq>,
    channel: NonNull<ibv_comp_channel>,
}

impl CompletionQueue {
    pub(crate) fn new(device: Device, entries: i32) -> Result<Self> {
        // SAFETY: the device is live; on failure the channel is destroyed before returning.
        let (cq, channel, fd) = unsafe {
            let channel = NonNull::new(ibv_create_comp_channel(device.as_ptr()))
                .ok_or_else(|| Error::last_os("ibv_create_comp_channel"))?;
            let fd = (*channel.as_ptr()).fd;
            let cq = ibv_create_cq(device.as_ptr(), entries, ptr::null_mut(), channel.as_ptr(), 0);
            let Some(cq) = NonNull::new(cq) else {
                let err = Error::last_os("ibv_create_cq");
                ibv_destroy_comp_channel(channel.as_ptr());
                return Err(err);
            };
            (cq, channel, fd)
        };
        let queue = CompletionQueue { cq, channel };
        sys::set_nonblocking("fcntl(completion channel)", fd)?;
        Ok(queue)
    }

    pub(super) fn as_ptr(&self) -> *mut ibv_cq {
        self.cq.as_ptr()
    }

    /// How many completions the queue holds (at least what was asked for).
    pub(crate) fn capacity(&self) -> u32 {
        // SAFETY: the queue is live; `cqe` is set by the provider.
        unsafe { (*self.cq.as_ptr()).cqe as u32 }
    }

    /// Grows the queue to hold at least `entries` completions. The caller
    /// keeps every other call on the queue out meanwhile.
    pub(crate) fn resize(&self, entries: u32) -> Result<()> {
        // SAFETY: the queue is live.
        check_errno("ibv_resize_cq", unsafe { ibv_resize_cq(self.cq.as_ptr(), entries as i32) })
    }

    /// The fd that becomes readable after `arm` when a completion arrives.
    pub(crate) fn event_fd(&self) -> RawFd {
        // SAFETY: the channel is live while self is.
        unsafe { (*self.channel.as_ptr()).fd }
    }

    /// Moves up to `out.len()` completions into `out`, a batch of up to
    /// `POLL_BATCH` per `ibv_poll_cq`; returns how many.
    pub(crate) fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        // Not zeroed: the device fills what it reports, and an empty poll (a
        // spinning waiter's usual one) costs no memset.
        let mut batch = [const { MaybeUninit::<ibv_wc>::uninit() }; POLL_BATCH];
        let mut taken = 0;
        while taken < out.len() {
            let room = (out.len() - taken).min(POLL_BATCH);
            // SAFETY: batch has room for `room` entries; MaybeUninit<T> has T's layout.
            let n = unsafe { ibv_poll_cq(self.as_ptr(), room as i32, batch.as_mut_ptr().cast()) };
            if n < 0 {
                return Err(Error::from_errno("ibv_poll_cq", -n));
            }
            for (slot, wc) in out[taken..].iter_mut().zip(&batch[..n as usize]) {
                // SAFETY: ibv_poll_cq wrote the first n entries.
                *slot = Completion::from_wc(unsafe { wc.assume_init_ref() });
            }
            taken += n as usize;
            if (n as usize) < room {
                break;
            }
        }
        Ok(taken)
    }

    /// Requests an event on the channel for the next completion. A completion
    /// that arrived before arming raises no event: poll again after arming.
    pub(crate) fn arm(&self) -> Result<()> {
        // SAFETY: the queue is live.
        check_errno("ibv_req_notify_cq", unsafe { ibv_req_notify_cq(self.cq.as_ptr(), 0) })
    }

    /// Takes and acknowledges one pending channel event, if there is one.
    pub(crate) fn consume_event(&self) -> Result<bool> {
        let mut cq = ptr::null_mut();
        let mut context = ptr::null_mut();
        // SAFETY: the channel is live and non-blocking; out-pointers are valid.
        if unsafe { ibv_get_cq_event(self.channel.as_ptr(), &mut cq, &mut context) } != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(false),
                _ => Err(Error::Os { op: "ibv_get_cq_event", source: err }),
            };
        }
        // Acknowledged at once: ibv_destroy_cq waits for every event to be acknowledged.
        // SAFETY: cq is the queue the event was for.
        unsafe { ibv_ack_cq_events(cq, 1) };
        Ok(true)
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: no QP uses the queue any more; every event was acknowledged.
        unsafe {
            let ret = ibv_destroy_cq(self.cq.as_ptr());
            if ret != 0 {
                log::error!("ibv_destroy_cq: errno {ret}; the queue leaks");
                return; // the channel is still in use by the queue
            }
            let ret = ibv_destroy_comp_channel(self.channel.as_ptr());
            if ret != 0 {
                log::error!("ibv_destroy_comp_channel: errno {ret}; the channel leaks");
            }
        }
    }
}

/// What a memory region lets the device do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read it (sends from it).
    Local,
    /// Write it for local receives too.
    LocalWrite,
    /// Let the peer that holds its rkey write it (a ring granted to a peer).
    RemoteWrite,
}

/// A buffer the engine owns, registered with a protection domain.
pub(crate) struct MemoryRegion {
    /// `None` once `deregister` revoked it early; the bytes stay until drop.
    mr: Option<NonNull<ibv_mr>>,
    // Fields drop after `Drop` deregistered the memory: the bytes, then the domain.
    buf: Box<[u8]>,
    _pd: Arc<ProtectionDomain>,
}

impl MemoryRegion {
    /// Allocates `len` zeroed bytes and registers them with only the rights
    /// `access` needs.
    pub(crate) fn new(pd: &Arc<ProtectionDomain>, len: usize, access: Access) -> Result<Self> {
        let flags = match access {
            Access::Local => ibv_access_flags(0),
            Access::LocalWrite => ibv_access_flags::IBV_ACCESS_LOCAL_WRITE,
            Access::RemoteWrite => {
                ibv_access_flags::IBV_ACCESS_LOCAL_WRITE | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            }
        };
        let mut buf = vec![0u8; len].into_boxed_slice();
        // SAFETY: buf is live for the life of the registration (see `Drop`).
        let mr = unsafe { ibv_reg_mr(pd.as_ptr(), buf.as_mut_ptr().cast(), len, flags.0 as i32) };
        match NonNull::new(mr) {
            Some(mr) => Ok(MemoryRegion { mr: Some(mr), buf, _pd: Arc::clone(pd) }),
            None => Err(Error::last_os("ibv_reg_mr")),
        }
    }

    fn registration(&self) -> &ibv_mr {
        let mr = self.mr.expect("a deregistered region is never handed to the device");
        // SAFETY: the registration is live until `deregister` or drop take it.
        unsafe { mr.as_ref() }
    }

    /// The key under which a peer granted this region writes to it.
    pub(crate) fn rkey(&self) -> u32 {
        self.registration().rkey
    }

    /// The address of the region's first byte, as the device sees it.
    pub(crate) fn addr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }

    /// A scatter/gather entry for `len` bytes at `offset`.
    fn sge(&self, offset: usize, len: usize) -> ibv_sge {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.buf.len()), "outside the region");
        ibv_sge { addr: self.addr() + offset as u64, length: len as u32, lkey: self.registration().lkey }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Ends the registration now, keeping the bytes readable: its keys die, so
    /// a peer's write under the rkey fails at the device from here on (even one
    /// already on the wire). Idempotent.
    pub(crate) fn deregister(&mut self) {
        let Some(mr) = self.mr.take() else { return };
        // SAFETY: the registration is live; no posted work request uses it any more.
        let ret = unsafe { ibv_dereg_mr(mr.as_ptr()) };
        if ret != 0 {
            log::error!("ibv_dereg_mr: errno {ret}; the registration leaks");
            // The device may still write here: leak the buffer rather than free it.
            mem::forget(mem::take(&mut self.buf));
        }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// Where an RDMA WRITE lands: an address in a region the peer granted, and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RemoteAddr {
    pub addr: u64,
    pub rkey: u32,
}

/// The local bytes of a send work request.
#[derive(Clone, Copy)]
enum Gather<'a> {
    None,
    Region {
        region: &'a MemoryRegion,
        offset: usize,
        len: usize,
    },
    /// Copied by the device during the post (`IBV_SEND_INLINE`): any memory.
    Inline(&'a [u8]),
}

/// A send-queue work request: SEND, RDMA WRITE or RDMA WRITE with immediate
/// data, built by its methods, posted by `QueuePair::post_send`.
#[derive(Clone, Copy)]
pub(crate) struct SendRequest<'a> {
    wr_id: u64,
    write_to: Option<RemoteAddr>,
    imm: Option<u32>,
    gather: Gather<'a>,
    signaled: bool,
    inline: bool,
}

impl<'a> SendRequest<'a> {
    /// A SEND of nothing yet, identified by `wr_id` in its completion.
    pub(crate) fn send(wr_id: u64) -> Self {
        SendRequest { wr_id, write_to: None, imm: None, gather: Gather::None, signaled: false, inline: false }
    }

    /// An RDMA WRITE to `to`, with `imm` as immediate data if given (which
    /// consumes a receive of the peer's and completes it).
    pub(crate) fn write(wr_id: u64, to: RemoteAddr, imm: Option<u32>) -> Self {
        SendRequest { write_to: Some(to), imm, ..Self::send(wr_id) }
    }

    /// A zero-length RDMA WRITE: it touches no memory of the peer's (so it
    /// names none: the responder checks no key for it, IBA C9-88), but the
    /// peer's queue pair must acknowledge it.
    pub(crate) fn empty_write(wr_id: u64) -> Self {
        Self::write(wr_id, RemoteAddr { addr: 0, rkey: 0 }, None)
    }

    /// Carries `len` bytes at `offset` of `region` (none when `len` is 0).
    pub(crate) fn gather(self, region: &'a MemoryRegion, offset: usize, len: usize) -> Self {
        let gather = if len == 0 { Gather::None } else { Gather::Region { region, offset, len } };
        SendRequest { gather, ..self }
    }

    /// Carries `bytes` inline: the device copies them during the post, so
    /// they need no registration (at most the queue pair's `max_inline`).
    pub(crate) fn inline_bytes(self, bytes: &'a [u8]) -> Self {
        SendRequest { gather: Gather::Inline(bytes), inline: true, ..self }
    }

    /// Copies the region's bytes during the post too (at most `max_inline`).
    pub(crate) fn inline(self, inline: bool) -> Self {
        SendRequest { inline, ..self }
    }

    /// Whether it produces a completion when it is done.
    pub(crate) fn signaled(self, signaled: bool) -> Self {
        SendRequest { signaled, ..self }
    }
}

/// A queue pair, borrowed from the endpoint that owns it.
#[derive(Clone, Copy)]
pub(crate) struct QueuePair<'a> {
    qp: NonNull<ibv_qp>,
    _owner: PhantomData<&'a ()>,
}

impl QueuePair<'_> {
    /// # Safety
    /// `qp` is a live queue pair that outlives the borrow.
    pub(crate) unsafe fn from_ptr<'a>(qp: *mut ibv_qp) -> QueuePair<'a> {
        QueuePair {
            qp: NonNull::new(qp).expect("a connected endpoint has a queue pair"),
            _owner: PhantomData,
        }
    }

    /// Its number, which the peer and its completions know it by.
    pub(crate) fn number(&self) -> u32 {
        // SAFETY: the queue pair is live for the borrow.
        unsafe { (*self.qp.as_ptr()).qp_num }
    }

    /// Moves the queue pair to the error state, as a fatal error of the
    /// device would: its work requests in flight flush. Only tests do this.
    pub(crate) fn fail(&self) -> Result<()> {
        // SAFETY: all-zero is a valid ibv_qp_attr; only its state is read.
        let mut attr: ibv_qp_attr = unsafe { mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
        // SAFETY: the queue pair is live; attr is valid for the call.
        check_errno("ibv_modify_qp(ERR)", unsafe {
            ibv_modify_qp(self.qp.as_ptr(), &mut attr, ibv_qp_attr_mask::IBV_QP_STATE.0 as i32)
        })
    }

    /// Posts one send-queue work request.
    pub(crate) fn post_send(&self, request: &SendRequest) -> Result<()> {
        let mut sge = match request.gather {
            Gather::None => ibv_sge { addr: 0, length: 0, lkey: 0 },
            Gather::Region { region, offset, len } => region.sge(offset, len),
            Gather::Inline(bytes) => {
                ibv_sge { addr: bytes.as_ptr() as u64, length: bytes.len() as u32, lkey: 0 }
            }
        };
        // SAFETY: all-zero is a valid ibv_send_wr (no next, no remote fields).
        let mut wr: ibv_send_wr = unsafe { mem::zeroed() };
        wr.wr_id = request.wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = if matches!(request.gather, Gather::None) { 0 } else { 1 };
        wr.opcode = match (request.write_to, request.imm) {
            (None, _) => ibv_wr_opcode::IBV_WR_SEND,
            (Some(_), None) => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            (Some(_), Some(imm)) => {
                wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
                ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
            }
        };
        if let Some(to) = request.write_to {
            wr.wr.rdma = rdma_t { remote_addr: to.addr, rkey: to.rkey };
        }
        if request.signaled {
            wr.send_flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if request.inline {
            wr.send_flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        let mut bad = ptr::null_mut();
        // SAFETY: the queue pair is live; wr and sge are valid for the call;
        // inline bytes are copied during it, region bytes are registered
        // memory of a region that outlives the queue pair (module comment).
        check_errno("ibv_post_send", unsafe { ibv_post_send(self.qp.as_ptr(), &mut wr, &mut bad) })
    }

    /// Posts one receive into `len` bytes at `offset` of `region`, or, with
    /// no region, one that takes only the immediate data of a write.
    pub(crate) fn post_recv(&self, wr_id: u64, into: Option<(&MemoryRegion, usize, usize)>) -> Result<()> {
        let mut sge = into.map(|(region, offset, len)| region.sge(offset, len));
        let (sg_list, num_sge) = match &mut sge {
            Some(sge) => (sge as *mut ibv_sge, 1),
            None => (ptr::null_mut(), 0),
        };
        let mut wr = ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list, num_sge };
        let mut bad = ptr::null_mut();
        // SAFETY: as in `post_send`.
        check_errno("ibv_post_recv", unsafe { ibv_post_recv(self.qp.as_ptr(), &mut wr, &mut bad) })
    }
}

/// Completions taken per `ibv_poll_cq` call.
pub(crate) const POLL_BATCH: usize = 16;

/// A work completion, copied out of its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Completion {
    /// The `wr_id` of the work request it completes.
    pub wr_id: u64,
    /// The local queue pair it belongs to.
    pub qp_num: u32,
    /// Bytes received (receives only).
    pub byte_len: u32,
    /// The immediate data in host order (receives of a write with immediate data).
    pub imm: u32,
    status: ibv_wc_status::Type,
    vendor_err: u32,
}

impl Completion {
    fn from_wc(wc: &ibv_wc) -> Completion {
        Completion {
            wr_id: wc.wr_id,
            qp_num: wc.qp_num,
            byte_len: wc.byte_len,
            // SAFETY: the union's members are both plain u32s.
            imm: u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data }),
            status: wc.status,
            vendor_err: wc.vendor_err,
        }
    }

    /// A successful completion of `wr_id` on `qp_num`, for tests of what routes or handles it.
    #[cfg(test)]
    pub(crate) fn success(qp_num: u32, wr_id: u64) -> Completion {
        Completion { wr_id, qp_num, ..Completion::default() }
    }

    /// The work request did what it asked.
    pub(crate) fn succeeded(&self) -> bool {
        self.status == ibv_wc_status::IBV_WC_SUCCESS
    }

    /// The queue pair went to the error state (a disconnect) before the
    /// request ran: outstanding requests flush.
    pub(crate) fn flushed(&self) -> bool {
        self.status == ibv_wc_status::IBV_WC_WR_FLUSH_ERR
    }

    /// The error of a flushed completion of `op` when nothing stopped the
    /// queue pair on purpose (see `Endpoint::flushed`).
    pub(crate) fn flush_error(&self, op: &'static str) -> Error {
        Error::Completion {
            op,
            status: "a flush: the queue pair entered the error state".into(),
            vendor_err: self.vendor_err,
        }
    }

    /// The error of a failed completion of `op` (e.g. "ring write").
    pub(crate) fn error(&self, op: &'static str) -> Error {
        Error::Completion { op, status: wc_status_text(self.status), vendor_err: self.vendor_err }
    }
}

/// The text libibverbs gives a completion status, e.g. "remote access error".
fn wc_status_text(status: ibv_wc_status::Type) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for any value.
    unsafe { CStr::from_ptr(ibv_wc_status_str(status)) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_statuses_have_readable_names() {
        assert_eq!(wc_status_text(ibv_wc_status::IBV_WC_SUCCESS), "success");
        assert_eq!(wc_status_text(ibv_wc_status::IBV_WC_WR_FLUSH_ERR), "Work Request Flushed Error");
    }
}
