//! JNI exports for the Java class `rdmanio.nio.SocketNative`: the sockets and
//! selectors behind the `java.nio` provider. As in `jvm`, each export converts,
//! calls the engine and returns; errors and panics become Java exceptions.
//!
//! Handles: a socket is an `Arc<Socket>` (`Arc::into_raw`), because a selector
//! holds it too; a poller is a `Box<Poller>`. The Java side releases each
//! exactly once, and only when no thread uses it any more.

use std::sync::Arc;
use std::time::Duration;

use jni::objects::{JByteBuffer, JClass, JString};
use jni::sys::{jboolean, jint, jlong};
use jni::{Env, EnvUnowned};

use crate::error::Error;
use crate::jvm::{direct_bytes, socket_addr, timeout, JniResult, ThrowJavaException};
use crate::poller::{PollMode, Poller};
use crate::rdma_stream::StreamOptions;
use crate::ring::RingConfig;
use crate::socket::{Socket, Spin};
use crate::transport::{RingPeers, Transport, TransportOptions};

/// # Safety
/// `handle` is 0 or a live socket handle from this module.
unsafe fn socket<'a>(handle: jlong) -> JniResult<&'a Socket> {
    // SAFETY: per the contract above: a pointer from `Arc::into_raw`, not yet released.
    Ok(unsafe { (handle as *const Socket).as_ref() }
        .ok_or_else(|| Error::InvalidArgument("closed socket".into()))?)
}

fn socket_handle(socket: Arc<Socket>) -> jlong {
    Arc::into_raw(socket) as jlong
}

/// # Safety
/// `handle` is 0 or a live poller handle from this module.
unsafe fn poller<'a>(handle: jlong) -> JniResult<&'a Poller> {
    // SAFETY: per the contract above.
    Ok(unsafe { (handle as *const Poller).as_ref() }
        .ok_or_else(|| Error::InvalidArgument("closed selector".into()))?)
}

/// The shape of a connection's rings for a receive buffer size (`SO_RCVBUF`;
/// 0 for the default): a power of two, records of at most a quarter of it.
fn transport_options(ring_bytes: jint) -> JniResult<TransportOptions> {
    let mut options = TransportOptions::default();
    if ring_bytes > 0 {
        let capacity = (ring_bytes as usize).next_power_of_two().clamp(4096, 1 << 26);
        let max_record = (capacity / 4).min(32 * 1024);
        options.rdma = StreamOptions { ring_capacity: capacity, max_record };
        options.shm = RingConfig::new(capacity, max_record, 0).map_err(Error::InvalidArgument)?;
    }
    Ok(options)
}

fn transport(env: &Env<'_>, name: &JString<'_>) -> JniResult<Transport> {
    Ok(name.try_to_string(env)?.parse::<Transport>()?)
}

/// A socket that neither connects nor listens yet. Its blocking operations
/// poll `spin_micros` before they sleep; negative: until ready.
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_open<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    spin_micros: jlong,
) -> jlong {
    env.with_env(|_| -> JniResult<_> {
        let spin = match u64::try_from(spin_micros) {
            Ok(micros) => Spin::For(Duration::from_micros(micros)),
            Err(_) => Spin::Forever,
        };
        Ok(socket_handle(Socket::open(spin)?))
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_connect<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    ip: JString<'local>,
    port: jint,
    transport_name: JString<'local>,
    ring_bytes: jint,
    timeout_millis: jint,
) {
    env.with_env(|env| -> JniResult<_> {
        let addr = socket_addr(env, &ip, port)?;
        let transport = transport(env, &transport_name)?;
        // SAFETY: the Java side passes a live handle.
        let socket = unsafe { socket(handle)? };
        Ok(socket.start_connect(addr, transport, transport_options(ring_bytes)?, timeout(timeout_millis))?)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_finishConnect<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    block: jboolean,
) -> jboolean {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: the Java side passes a live handle.
        Ok(unsafe { socket(handle)? }.finish_connect(block)?)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_listen<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    ip: JString<'local>,
    port: jint,
    transport_name: JString<'local>,
    ring_bytes: jint,
    ring_peers: JString<'local>,
    send_pool_slots: jint,
    backlog: jint,
) {
    env.with_env(|env| -> JniResult<_> {
        let addr = socket_addr(env, &ip, port)?;
        let transport = transport(env, &transport_name)?;
        let backlog = usize::try_from(backlog).unwrap_or(0);
        let mut options = transport_options(ring_bytes)?;
        options.ring_peers = ring_peers.try_to_string(env)?.parse::<RingPeers>()?;
        options.sends.pool_slots = usize::try_from(send_pool_slots)
            .map_err(|_| Error::InvalidArgument(format!("{send_pool_slots} receive slots")))?;
        // SAFETY: as above.
        let socket = unsafe { socket(handle)? };
        Ok(socket.start_listen(addr, transport, options, backlog)?)
    })
    .resolve::<ThrowJavaException>()
}

/// Returns the accepted socket's handle, or 0 when none is waiting.
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_accept<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    block: jboolean,
) -> jlong {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.accept(block)?.map_or(0, socket_handle))
    })
    .resolve::<ThrowJavaException>()
}

/// Returns a byte count, -1 at end of stream, -2 when nothing is there (non-blocking).
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_read<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    buffer: JByteBuffer<'local>,
    position: jint,
    length: jint,
    block: jboolean,
    timeout_millis: jint,
) -> jint {
    env.with_env(|env| -> JniResult<_> {
        let out = direct_bytes(env, &buffer, position, length)?;
        // SAFETY: as above. A read never exceeds `length`, a jint.
        Ok(unsafe { socket(handle)? }.read(out, block, timeout(timeout_millis))? as jint)
    })
    .resolve::<ThrowJavaException>()
}

/// Returns how many bytes were written (all of them when blocking).
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_write<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    buffer: JByteBuffer<'local>,
    position: jint,
    length: jint,
    block: jboolean,
) -> jint {
    env.with_env(|env| -> JniResult<_> {
        let data = direct_bytes(env, &buffer, position, length)?;
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.write(data, block)? as jint)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_shutdownOutput<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.shutdown_output()?)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_shutdownInput<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.shutdown_input()?)
    })
    .resolve::<ThrowJavaException>()
}

/// "ip:port" (IPv6 in brackets) of the local end, or of the peer when `peer`.
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_address<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
    peer: jboolean,
) -> JString<'local> {
    env.with_env(|env| -> JniResult<_> {
        // SAFETY: as above.
        let (local, remote) = unsafe { socket(handle)? }.addresses()?;
        Ok(JString::from_str(env, if peer { remote } else { local }.to_string())?)
    })
    .resolve::<ThrowJavaException>()
}

/// "rdma", "shm" or "tcp".
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_medium<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> JString<'local> {
    env.with_env(|env| -> JniResult<_> {
        // SAFETY: as above.
        let medium = unsafe { socket(handle)? }.medium()?;
        Ok(JString::from_str(env, medium.to_string())?)
    })
    .resolve::<ThrowJavaException>()
}

/// Wakes the socket's blocked threads and shuts it down; the handle stays valid.
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_close<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        unsafe { socket(handle)? }.close();
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}

/// Drops the Java side's reference; the socket goes once no selector holds it either.
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_release<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        if handle != 0 {
            // SAFETY: the Java side releases each handle exactly once, after its last use.
            drop(unsafe { Arc::from_raw(handle as *const Socket) });
        }
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}

/// `mode` is "busy", "blocking" or "adaptive" (spinning `spin_micros` first).
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_pollerOpen<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    mode: JString<'local>,
    spin_micros: jlong,
) -> jlong {
    env.with_env(|env| -> JniResult<_> {
        let mode = match mode.try_to_string(env)?.as_str() {
            "busy" => PollMode::Busy,
            "blocking" => PollMode::Blocking,
            "adaptive" => PollMode::Adaptive(Duration::from_micros(spin_micros.max(0) as u64)),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown polling mode '{other}': use busy, blocking or adaptive"
                ))
                .into())
            }
        };
        Ok(Box::into_raw(Box::new(Poller::new(mode)?)) as jlong)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_pollerRegister<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    poller_handle: jlong,
    socket_handle: jlong,
    slot: jint,
) {
    env.with_env(|_| -> JniResult<_> {
        let slot = usize::try_from(slot).map_err(|_| Error::InvalidArgument(format!("slot {slot}")))?;
        // SAFETY: both handles are live; the socket's count goes up for the poller's own reference.
        let socket = unsafe {
            socket(socket_handle)?;
            Arc::increment_strong_count(socket_handle as *const Socket);
            Arc::from_raw(socket_handle as *const Socket)
        };
        // SAFETY: as above.
        Ok(unsafe { poller(poller_handle)? }.register(slot, socket)?)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_pollerDeregister<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    poller_handle: jlong,
    slot: jint,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        unsafe { poller(poller_handle)? }.deregister(slot as usize);
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}

/// Reads `slots` interests (ints in native order) and writes (slot, ops) int
/// pairs into `ready`; returns the number of pairs.
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_pollerSelect<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    poller_handle: jlong,
    interests: JByteBuffer<'local>,
    slots: jint,
    ready: JByteBuffer<'local>,
    timeout_millis: jlong,
) -> jint {
    env.with_env(|env| -> JniResult<_> {
        let interests = ints(direct_bytes(env, &interests, 0, slots.saturating_mul(4))?);
        let capacity = env.get_direct_buffer_capacity(&ready)?;
        let ready = ints(direct_bytes(env, &ready, 0, (capacity / 8 * 8) as jint)?);
        let timeout = u64::try_from(timeout_millis).ok().map(Duration::from_millis);
        // SAFETY: as above.
        Ok(unsafe { poller(poller_handle)? }.select(interests, ready, timeout)? as jint)
    })
    .resolve::<ThrowJavaException>()
}

/// Views bytes of a direct buffer as native-order ints.
fn ints(bytes: &mut [u8]) -> &mut [i32] {
    // SAFETY: i32 has no invalid bit patterns; align_to_mut yields only the aligned middle.
    let (head, ints, _) = unsafe { bytes.align_to_mut::<i32>() };
    assert!(head.is_empty(), "direct buffers are allocated at least 8-aligned");
    ints
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_pollerWakeup<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    poller_handle: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        Ok(unsafe { poller(poller_handle)? }.wakeup()?)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_pollerClearWakeup<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    poller_handle: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        Ok(unsafe { poller(poller_handle)? }.clear_wakeup()?)
    })
    .resolve::<ThrowJavaException>()
}

/// Frees a poller and drops its references to the sockets still registered.
#[no_mangle]
extern "system" fn Java_rdmanio_nio_SocketNative_pollerClose<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    poller_handle: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        if poller_handle != 0 {
            // SAFETY: the Java side closes each poller once, when no select runs.
            drop(unsafe { Box::from_raw(poller_handle as *mut Poller) });
        }
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}
