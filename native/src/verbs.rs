//! Owned wrappers around the verbs objects a connection uses. Each wrapper owns
//! exactly one object and releases it in `Drop`; a connection declares them in
//! teardown order (a CQ before its channel, MRs before their PD).

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};

use rdma_sys::*;

use crate::error::{check_errno, Error, Result};
use crate::sys;

/// Names of the RDMA devices on this host, e.g. `["rxe0"]`.
///
/// # Errors
/// `NoDevice` when there are none, or when the kernel has no RDMA support at all
/// (the normal case on a host without RDMA: libibverbs reports ENOSYS).
pub fn device_names() -> Result<Vec<String>> {
    let mut count = 0;
    // SAFETY: count is a valid out-pointer; the list is freed below.
    let list = unsafe { ibv_get_device_list(&mut count) };
    if list.is_null() {
        let cause = std::io::Error::last_os_error();
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

/// How many completions one queue of `context`'s device can hold.
///
/// # Safety
/// `context` must be a live device context.
pub(crate) unsafe fn max_cq_entries(context: *mut ibv_context) -> Result<u32> {
    let mut attr: ibv_device_attr = std::mem::zeroed();
    check_errno("ibv_query_device", ibv_query_device(context, &mut attr))?;
    Ok(attr.max_cqe as u32)
}

/// The name of `device` (`ibv_get_device_name`).
///
/// # Safety
/// `device` must be a live device pointer.
pub(crate) unsafe fn device_name(device: *mut ibv_device) -> String {
    let name = ibv_get_device_name(device);
    if name.is_null() {
        return String::from("?");
    }
    CStr::from_ptr(name).to_string_lossy().into_owned()
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
    /// # Safety
    /// `context` must be a live device context that outlives the domain.
    pub(crate) unsafe fn new(context: *mut ibv_context) -> Result<Self> {
        NonNull::new(ibv_alloc_pd(context))
            .map(ProtectionDomain)
            .ok_or_else(|| Error::last_os("ibv_alloc_pd"))
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_pd {
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
pub(crate) struct SharedReceiveQueue(NonNull<ibv_srq>);

impl SharedReceiveQueue {
    /// A queue of up to `entries` receives of one scatter entry each.
    pub(crate) fn new(pd: &ProtectionDomain, entries: u32) -> Result<Self> {
        // SAFETY: all-zero is a valid ibv_srq_init_attr.
        let mut attr: ibv_srq_init_attr = unsafe { std::mem::zeroed() };
        attr.attr.max_wr = entries;
        attr.attr.max_sge = 1;
        // SAFETY: the domain is live; attr is valid for the call.
        let srq = unsafe { ibv_create_srq(pd.as_ptr(), &mut attr) };
        NonNull::new(srq).map(SharedReceiveQueue).ok_or_else(|| Error::last_os("ibv_create_srq"))
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_srq {
        self.0.as_ptr()
    }

    /// Posts one receive into `sge`, identified by `wr_id` in its completion.
    pub(crate) fn post(&self, wr_id: u64, mut sge: ibv_sge) -> Result<()> {
        let mut wr = ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad = ptr::null_mut();
        // SAFETY: the queue is live; wr and sge are valid for the call, and the
        // caller keeps the buffer registered until the receive completes.
        check_errno("ibv_post_srq_recv", unsafe { ibv_post_srq_recv(self.0.as_ptr(), &mut wr, &mut bad) })
    }
}

impl Drop for SharedReceiveQueue {
    fn drop(&mut self) {
        // SAFETY: no queue pair uses the SRQ any more.
        let ret = unsafe { ibv_destroy_srq(self.0.as_ptr()) };
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
    /// # Safety
    /// `context` must be a live device context that outlives the queue.
    pub(crate) unsafe fn new(context: *mut ibv_context, entries: i32) -> Result<Self> {
        let channel = NonNull::new(ibv_create_comp_channel(context))
            .ok_or_else(|| Error::last_os("ibv_create_comp_channel"))?;
        let fd = (*channel.as_ptr()).fd;
        let cq = ibv_create_cq(context, entries, ptr::null_mut(), channel.as_ptr(), 0);
        let Some(cq) = NonNull::new(cq) else {
            let err = Error::last_os("ibv_create_cq");
            ibv_destroy_comp_channel(channel.as_ptr());
            return Err(err);
        };
        let queue = CompletionQueue { cq, channel };
        sys::set_nonblocking("fcntl(completion channel)", fd)?;
        Ok(queue)
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_cq {
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

    /// Moves up to `wcs.len()` completions into `wcs`; returns how many.
    pub(crate) fn poll(&self, wcs: &mut [ibv_wc]) -> Result<usize> {
        // SAFETY: wcs has room for wcs.len() entries.
        let n = unsafe { ibv_poll_cq(self.cq.as_ptr(), wcs.len() as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(Error::from_errno("ibv_poll_cq", -n));
        }
        Ok(n as usize)
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

/// A buffer the engine owns, registered with a protection domain.
pub(crate) struct MemoryRegion {
    /// `None` once `deregister` revoked it early; the bytes stay until drop.
    mr: Option<NonNull<ibv_mr>>,
    // Declared after `mr`: the memory must stay until it is deregistered.
    buf: Box<[u8]>,
}

impl MemoryRegion {
    /// Allocates `len` zeroed bytes and registers them with `access` (only the
    /// rights the buffer needs: local write for receive buffers, none for sends).
    pub(crate) fn new(pd: &ProtectionDomain, len: usize, access: ibv_access_flags) -> Result<Self> {
        let mut buf = vec![0u8; len].into_boxed_slice();
        // SAFETY: buf is live for the life of the registration (see field order).
        let mr = unsafe { ibv_reg_mr(pd.as_ptr(), buf.as_mut_ptr().cast(), len, access.0 as i32) };
        match NonNull::new(mr) {
            Some(mr) => Ok(MemoryRegion { mr: Some(mr), buf }),
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

    pub(crate) fn lkey(&self) -> u32 {
        self.registration().lkey
    }

    /// A scatter/gather entry for `len` bytes at `offset`.
    pub(crate) fn sge(&mut self, offset: usize, len: usize) -> ibv_sge {
        debug_assert!(offset + len <= self.buf.len());
        ibv_sge { addr: self.buf[offset..].as_mut_ptr() as u64, length: len as u32, lkey: self.lkey() }
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
            std::mem::forget(std::mem::take(&mut self.buf));
        }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// The text libibverbs gives a completion status, e.g. "remote access error".
pub(crate) fn wc_status_text(status: ibv_wc_status::Type) -> String {
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
