//! The exports behind `rdmanio.nio.SocketNative`: the sockets and selectors of
//! the `java.nio` provider, and the constants the Java side reads from here
//! at load instead of copying them.
//!
//! Handles: a socket is an `Arc<Socket>` (`Arc::into_raw`), because a selector
//! holds it too; a poller is a `Box<SelectorPoller>`. The Java side releases each
//! exactly once, and only when no thread uses it any more.

use std::sync::Arc;
use std::time::Duration;

use jni::objects::{Global, JByteBuffer, JIntArray, JLongArray, JString};
use jni::sys::{jboolean, jint, jlong, jobject};
use jni::Env;
use parking_lot::Mutex;

use super::{buffer_range, export, export_lean, socket_addr, timeout, JniResult};
use crate::error::Error;
use crate::media::stream::ops;
use crate::media::transport::{RingPeers, Transport, TransportOptions};
use crate::nio::poller::{PollMode, Poller};
use crate::nio::socket::{status, Inherited, Socket, Spin};

/// The values `SocketNative.constants()` returns, in the order its Java side
/// reads them: ready-op bits, then read statuses.
pub(crate) const CONSTANTS: [i32; 6] = [
    ops::READ as i32,
    ops::WRITE as i32,
    ops::CONNECT as i32,
    ops::ACCEPT as i32,
    status::EOF as i32,
    status::UNAVAILABLE as i32,
];

/// # Safety
/// `handle` is 0 or a live socket handle from this module.
pub(super) unsafe fn socket<'a>(handle: jlong) -> JniResult<&'a Socket> {
    // SAFETY: per the contract above: a pointer from `Arc::into_raw`, not yet released.
    Ok(unsafe { (handle as *const Socket).as_ref() }
        .ok_or_else(|| Error::InvalidArgument("closed socket".into()))?)
}

/// A reference of its own to the socket behind `handle` (a selector's, the closer's).
///
/// # Safety
/// As `socket`.
unsafe fn shared_socket(handle: jlong) -> JniResult<Arc<Socket>> {
    // SAFETY: per the contract above; the count goes up for the new reference.
    unsafe {
        socket(handle)?;
        Arc::increment_strong_count(handle as *const Socket);
        Ok(Arc::from_raw(handle as *const Socket))
    }
}

pub(super) fn socket_handle(socket: Arc<Socket>) -> jlong {
    Arc::into_raw(socket) as jlong
}

/// A selector's poller and the buffers it selects with. The Java side hands
/// the buffers over when it opens the poller and again when it grows them,
/// not with each select: finding a direct buffer's address and capacity takes
/// two JNI calls, each with a type check (an empty `selectNow` went from 575
/// to 500 ns without the four).
struct SelectorPoller {
    poller: Poller,
    buffers: Mutex<SelectBuffers>,
}

/// The interests (an int per slot) and the room for (slot, ops) pairs, as
/// address and capacity, kept alive by global references.
struct SelectBuffers {
    interests: (usize, usize),
    ready: (usize, usize),
    _held: [Global<JByteBuffer<'static>>; 2],
}

impl SelectBuffers {
    fn new(env: &Env<'_>, interests: &JByteBuffer<'_>, ready: &JByteBuffer<'_>) -> JniResult<SelectBuffers> {
        let address_and_capacity = |buffer: &JByteBuffer<'_>| -> JniResult<(usize, usize)> {
            Ok((env.get_direct_buffer_address(buffer)? as usize, env.get_direct_buffer_capacity(buffer)?))
        };
        Ok(SelectBuffers {
            interests: address_and_capacity(interests)?,
            ready: address_and_capacity(ready)?,
            _held: [env.new_global_ref(interests)?, env.new_global_ref(ready)?],
        })
    }
}

/// # Safety
/// `handle` is 0 or a live poller handle from this module.
unsafe fn poller<'a>(handle: jlong) -> JniResult<&'a SelectorPoller> {
    // SAFETY: per the contract above.
    Ok(unsafe { (handle as *const SelectorPoller).as_ref() }
        .ok_or_else(|| Error::InvalidArgument("closed selector".into()))?)
}

fn parse<T: std::str::FromStr<Err = Error>>(env: &Env<'_>, text: &JString<'_>) -> JniResult<T> {
    Ok(text.try_to_string(env)?.parse::<T>()?)
}

/// A receive buffer size from Java (`SO_RCVBUF`; 0 for the default).
fn transport_options(ring_bytes: jint) -> JniResult<TransportOptions> {
    let bytes = usize::try_from(ring_bytes)
        .map_err(|_| Error::InvalidArgument(format!("negative receive buffer size {ring_bytes}")))?;
    Ok(TransportOptions::with_receive_buffer(bytes)?)
}

export! {
    /// The ready-op bits and read statuses (see `CONSTANTS`).
    fn Java_rdmanio_nio_SocketNative_constants<'l>(env) -> JIntArray<'l> {
        let array = JIntArray::new(env, CONSTANTS.len())?;
        array.set_region(env, 0, &CONSTANTS)?;
        Ok(array)
    }
}

export! {
    /// Throws `IllegalArgumentException` unless `name` is a transport, or
    /// (`poll_mode`) a polling mode, that the engine knows.
    fn Java_rdmanio_nio_SocketNative_checkName<'l>(env, name: JString<'l>, poll_mode: jboolean) {
        if poll_mode {
            parse::<PollMode>(env, &name)?;
        } else {
            parse::<Transport>(env, &name)?;
        }
        Ok(())
    }
}

export! {
    /// A socket that neither connects nor listens yet. Its blocking operations
    /// poll `spin_micros` before they sleep; negative: until ready.
    fn Java_rdmanio_nio_SocketNative_open<'l>(_, spin_micros: jlong) -> jlong {
        Ok(socket_handle(Socket::open(Spin::from_micros(spin_micros))?))
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_connect<'l>(
        env,
        handle: jlong,
        ip: JString<'l>,
        port: jint,
        transport: JString<'l>,
        ring_bytes: jint,
        timeout_millis: jint,
    ) {
        let addr = socket_addr(env, &ip, port)?;
        let transport = parse::<Transport>(env, &transport)?;
        // SAFETY: the Java side passes a live handle.
        let socket = unsafe { socket(handle)? };
        Ok(socket.start_connect(addr, transport, transport_options(ring_bytes)?, timeout(timeout_millis))?)
    }
}

export! {
    /// Sends one byte of urgent data (TCP only); false when there is no room and not `block`.
    fn Java_rdmanio_nio_SocketNative_sendUrgentData<'l>(_, handle: jlong, byte: jint, block: jboolean) -> jboolean {
        // SAFETY: the Java side passes a live handle.
        Ok(unsafe { socket(handle)? }.send_urgent(byte as u8, block)?)
    }
}

export! {
    /// Urgent data in line (`SO_OOBINLINE`) or dropped.
    fn Java_rdmanio_nio_SocketNative_setUrgentInline<'l>(_, handle: jlong, inline: jboolean) {
        // SAFETY: the Java side passes a live handle.
        Ok(unsafe { socket(handle)? }.set_urgent_inline(inline)?)
    }
}

export! {
    /// A new pipe's ends: [source, sink] handles.
    fn Java_rdmanio_nio_SocketNative_pipe<'l>(env, spin_micros: jlong) -> JLongArray<'l> {
        let (source, sink) = Socket::pipe(Spin::from_micros(spin_micros))?;
        let handles = [socket_handle(source), socket_handle(sink)];
        let array = JLongArray::new(env, handles.len())?;
        array.set_region(env, 0, &handles)?;
        Ok(array)
    }
}

export! {
    /// The socket a launcher passed on standard input: [kind, handle], the
    /// kind being 0 for none, 1 a TCP connection, 2 a TCP listener, 3 an IPv4
    /// UDP socket, 4 an IPv6 one, 5 a socket of another family (no handle).
    fn Java_rdmanio_nio_SocketNative_inherited<'l>(env, spin_micros: jlong) -> JLongArray<'l> {
        let (kind, socket) = match Socket::inherited(Spin::from_micros(spin_micros))? {
            None => (0, None),
            Some(Inherited::Connection(socket)) => (1, Some(socket)),
            Some(Inherited::Listener(socket)) => (2, Some(socket)),
            Some(Inherited::Datagram { socket, ipv6 }) => (if ipv6 { 4 } else { 3 }, Some(socket)),
            Some(Inherited::OtherFamily) => (5, None),
        };
        let result = [kind, socket.map_or(0, socket_handle)];
        let array = JLongArray::new(env, result.len())?;
        array.set_region(env, 0, &result)?;
        Ok(array)
    }
}

export! {
    /// Points the standard streams at /dev/null (an inherited channel closed).
    fn Java_rdmanio_nio_SocketNative_detachStdStreams<'l>(_) {
        Ok(crate::sys::inherited::detach_std_streams()?)
    }
}

export! {
    /// A blocking channel's connect, made in the calling thread where it can
    /// be (see `Socket::connect_here`): true once connected, false when it
    /// goes on in a connector thread (`finishConnect` waits).
    fn Java_rdmanio_nio_SocketNative_connectHere<'l>(
        env,
        handle: jlong,
        ip: JString<'l>,
        port: jint,
        transport: JString<'l>,
        ring_bytes: jint,
        timeout_millis: jint,
    ) -> jboolean {
        let addr = socket_addr(env, &ip, port)?;
        let transport = parse::<Transport>(env, &transport)?;
        // SAFETY: the Java side passes a live handle.
        let socket = unsafe { socket(handle)? };
        Ok(socket.connect_here(addr, transport, transport_options(ring_bytes)?, timeout(timeout_millis))?)
    }
}

export! {
    /// A client's bind: "ip:port" of the address now held.
    fn Java_rdmanio_nio_SocketNative_bind<'l>(env, handle: jlong, ip: JString<'l>, port: jint) -> JString<'l> {
        let addr = socket_addr(env, &ip, port)?;
        // SAFETY: the Java side passes a live handle.
        let local = unsafe { socket(handle)? }.bind(addr)?;
        Ok(JString::from_str(env, local.to_string())?)
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_finishConnect<'l>(_, handle: jlong, block: jboolean) -> jboolean {
        // SAFETY: the Java side passes a live handle.
        Ok(unsafe { socket(handle)? }.finish_connect(block)?)
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_listen<'l>(
        env,
        handle: jlong,
        ip: JString<'l>,
        port: jint,
        transport: JString<'l>,
        ring_bytes: jint,
        ring_peers: JString<'l>,
        send_pool_slots: jint,
        backlog: jint,
    ) {
        let addr = socket_addr(env, &ip, port)?;
        let transport = parse::<Transport>(env, &transport)?;
        let mut options = transport_options(ring_bytes)?;
        options.ring_peers = parse::<RingPeers>(env, &ring_peers)?;
        options.sends.pool_slots = usize::try_from(send_pool_slots)
            .map_err(|_| Error::InvalidArgument(format!("{send_pool_slots} receive slots")))?;
        // SAFETY: as above.
        let socket = unsafe { socket(handle)? };
        Ok(socket.start_listen(addr, transport, options, usize::try_from(backlog).unwrap_or(0))?)
    }
}

export! {
    /// Returns the accepted socket's handle, or 0 when none is waiting.
    fn Java_rdmanio_nio_SocketNative_accept<'l>(_, handle: jlong, block: jboolean, timeout_millis: jint) -> jlong {
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.accept(block, timeout(timeout_millis))?.map_or(0, socket_handle))
    }
}

export_lean! {
    /// Returns a byte count, `status::EOF` or `status::UNAVAILABLE` (non-blocking).
    fn Java_rdmanio_nio_SocketNative_read(
        env,
        handle: jlong,
        buffer: jobject,
        position: jint,
        length: jint,
        block: jboolean,
        timeout_millis: jint,
    ) -> jint {
        let out = env.direct_bytes(buffer, position, length)?;
        // SAFETY: as above. A read never exceeds `length`, a jint.
        Ok(unsafe { socket(handle)? }.read(out, block, timeout(timeout_millis))? as jint)
    }
}

export_lean! {
    /// Returns how many bytes were written (all of them when blocking).
    fn Java_rdmanio_nio_SocketNative_write(
        env,
        handle: jlong,
        buffer: jobject,
        position: jint,
        length: jint,
        block: jboolean,
    ) -> jint {
        let data = env.direct_bytes(buffer, position, length)?;
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.write(data, block)? as jint)
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_shutdownOutput<'l>(_, handle: jlong) {
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.shutdown_output()?)
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_shutdownInput<'l>(_, handle: jlong) {
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.shutdown_input()?)
    }
}

export! {
    /// "ip:port" (IPv6 in brackets) of the local end, or of the peer when `peer`.
    fn Java_rdmanio_nio_SocketNative_address<'l>(env, handle: jlong, peer: jboolean) -> JString<'l> {
        // SAFETY: as above.
        let (local, remote) = unsafe { socket(handle)? }.addresses()?;
        Ok(JString::from_str(env, if peer { remote } else { local }.to_string())?)
    }
}

export! {
    /// The bytes a read returns now without waiting, at least (`Socket::available`).
    fn Java_rdmanio_nio_SocketNative_available<'l>(_, handle: jlong) -> jint {
        // SAFETY: as above.
        let available = unsafe { socket(handle)? }.available()?;
        Ok(jint::try_from(available).unwrap_or(jint::MAX))
    }
}

export! {
    /// The medium's name (`Medium`'s `Display`).
    fn Java_rdmanio_nio_SocketNative_medium<'l>(env, handle: jlong) -> JString<'l> {
        // SAFETY: as above.
        let medium = unsafe { socket(handle)? }.medium()?;
        Ok(JString::from_str(env, medium.to_string())?)
    }
}

export! {
    /// Wakes the socket's blocked threads and shuts it down, resetting the
    /// connection when `abortive` (`SO_LINGER` 0); `held`: a selector's key
    /// still holds it (`Socket::close_handing_over`). The handle stays valid.
    fn Java_rdmanio_nio_SocketNative_close<'l>(_, handle: jlong, abortive: jboolean, held: jboolean) {
        if abortive {
            // SAFETY: as above.
            unsafe { socket(handle)? }.abort();
        } else {
            // SAFETY: as above; the closer may keep the reference.
            unsafe { shared_socket(handle)? }.close_handing_over(held);
        }
        Ok(())
    }
}

export! {
    /// Drops the Java side's reference; the socket goes once no selector holds it either.
    fn Java_rdmanio_nio_SocketNative_release<'l>(_, handle: jlong) {
        if handle != 0 {
            // SAFETY: the Java side releases each handle exactly once, after its last use.
            drop(unsafe { Arc::from_raw(handle as *const Socket) });
        }
        Ok(())
    }
}

export! {
    /// `mode` is "busy", "blocking" or "adaptive" (spinning `spin_micros` first);
    /// for `interests` and `ready`, see `pollerSelect`.
    fn Java_rdmanio_nio_SocketNative_pollerOpen<'l>(
        env,
        mode: JString<'l>,
        spin_micros: jlong,
        interests: JByteBuffer<'l>,
        ready: JByteBuffer<'l>,
    ) -> jlong {
        let spin = Duration::from_micros(spin_micros.max(0) as u64);
        let mode = parse::<PollMode>(env, &mode)?.spinning_for(spin);
        let buffers = Mutex::new(SelectBuffers::new(env, &interests, &ready)?);
        Ok(Box::into_raw(Box::new(SelectorPoller { poller: Poller::new(mode)?, buffers })) as jlong)
    }
}

export! {
    /// Replaces the buffers `pollerSelect` uses (the old ones may go).
    fn Java_rdmanio_nio_SocketNative_pollerBuffers<'l>(
        env,
        poller_handle: jlong,
        interests: JByteBuffer<'l>,
        ready: JByteBuffer<'l>,
    ) {
        let buffers = SelectBuffers::new(env, &interests, &ready)?;
        // SAFETY: as above.
        *unsafe { poller(poller_handle)? }.buffers.lock() = buffers;
        Ok(())
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_pollerRegister<'l>(_, poller_handle: jlong, socket_handle: jlong, slot: jint) {
        let slot = usize::try_from(slot).map_err(|_| Error::InvalidArgument(format!("slot {slot}")))?;
        // SAFETY: both handles are live; the poller keeps a reference of its own.
        let socket = unsafe { shared_socket(socket_handle)? };
        // SAFETY: as above.
        Ok(unsafe { poller(poller_handle)? }.poller.register(slot, socket)?)
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_pollerDeregister<'l>(_, poller_handle: jlong, slot: jint) {
        // SAFETY: as above.
        unsafe { poller(poller_handle)? }.poller.deregister(slot as usize);
        Ok(())
    }
}

export_lean! {
    /// Reads `slots` interests (ints in native order) from the poller's interest
    /// buffer and writes (slot, ops) int pairs into its ready buffer; returns
    /// the number of pairs.
    fn Java_rdmanio_nio_SocketNative_pollerSelect(_env, poller_handle: jlong, slots: jint, timeout_millis: jlong) -> jint {
        // SAFETY: as above.
        let SelectorPoller { poller, buffers } = unsafe { poller(poller_handle)? };
        // Held through the select: the buffers stay while it writes into them.
        let buffers = buffers.lock();
        let ((interests_at, interests_capacity), (ready_at, ready_capacity)) = (buffers.interests, buffers.ready);
        // SAFETY: a direct buffer's address and capacity, the buffer held by a global reference.
        let (interests, ready) = unsafe {
            (
                buffer_range(interests_at as *mut u8, interests_capacity, 0, slots.saturating_mul(4))?,
                // All of its whole pairs (a buffer's capacity is an int on the Java side).
                buffer_range(ready_at as *mut u8, ready_capacity, 0, (ready_capacity / 8 * 8) as jint)?,
            )
        };
        let timeout = u64::try_from(timeout_millis).ok().map(Duration::from_millis);
        Ok(poller.select(ints(interests), ints(ready), timeout)? as jint)
    }
}

/// Views bytes of a direct buffer as native-order ints.
fn ints(bytes: &mut [u8]) -> &mut [i32] {
    // SAFETY: i32 has no invalid bit patterns; align_to_mut yields only the aligned middle.
    let (head, ints, _) = unsafe { bytes.align_to_mut::<i32>() };
    assert!(head.is_empty(), "direct buffers are allocated at least 8-aligned");
    ints
}

export! {
    fn Java_rdmanio_nio_SocketNative_pollerWakeup<'l>(_, poller_handle: jlong) {
        // SAFETY: as above.
        Ok(unsafe { poller(poller_handle)? }.poller.wakeup()?)
    }
}

export! {
    fn Java_rdmanio_nio_SocketNative_pollerClearWakeup<'l>(_, poller_handle: jlong) {
        // SAFETY: as above.
        Ok(unsafe { poller(poller_handle)? }.poller.clear_wakeup()?)
    }
}

export! {
    /// Frees a poller and drops its references to the sockets still registered.
    fn Java_rdmanio_nio_SocketNative_pollerClose<'l>(_, poller_handle: jlong) {
        if poller_handle != 0 {
            // SAFETY: the Java side closes each poller once, when no select runs.
            drop(unsafe { Box::from_raw(poller_handle as *mut SelectorPoller) });
        }
        Ok(())
    }
}
