//! The exports behind `rdmanio.nio.DatagramNative`: the provider's datagram
//! channels. Their handles are socket handles (see `socket_native`), which
//! `SocketNative`'s close, release and poller calls take alike.

use std::net::{IpAddr, SocketAddr};

use jni::objects::{JByteBuffer, JObject, JString, JValue};
use jni::sys::{jboolean, jint, jlong};
use jni::Env;

use super::socket_native::{socket, socket_handle};
use super::{direct_bytes, export, socket_addr, timeout, JniResult};
use crate::error::Error;
use crate::media::datagram::{DatagramOption, Membership};
use crate::nio::socket::{status, Socket, Spin};

/// The size of a sender address as `receive` writes it (see there).
const SENDER_BYTES: usize = 24;

fn address_text<'l>(env: &mut Env<'l>, addr: SocketAddr) -> JniResult<JString<'l>> {
    Ok(JString::from_str(env, addr.to_string())?)
}

/// An IP address from Java's text; "" for none.
fn ip(env: &Env<'_>, text: &JString<'_>) -> JniResult<Option<IpAddr>> {
    let text = text.try_to_string(env)?;
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::bindings::socket_addr(&text, 0)?.ip()))
}

export! {
    /// A new UDP socket's handle: IPv6 with IPv4 mapped in, or IPv4 only.
    fn Java_rdmanio_nio_DatagramNative_open<'l>(_, ipv6: jboolean, spin_micros: jlong) -> jlong {
        Ok(socket_handle(Socket::datagram(ipv6, Spin::from_micros(spin_micros))?))
    }
}

export! {
    /// Binds; returns "ip:port" bound.
    fn Java_rdmanio_nio_DatagramNative_bind<'l>(env, handle: jlong, ip: JString<'l>, port: jint) -> JString<'l> {
        let addr = socket_addr(env, &ip, port)?;
        // SAFETY: the Java side passes a live handle.
        let local = unsafe { socket(handle)? }.with_datagram(|datagram| datagram.bind(addr))?;
        address_text(env, local)
    }
}

export! {
    /// Connects; returns the local "ip:port".
    fn Java_rdmanio_nio_DatagramNative_connect<'l>(env, handle: jlong, ip: JString<'l>, port: jint) -> JString<'l> {
        let addr = socket_addr(env, &ip, port)?;
        // SAFETY: as above.
        let local = unsafe { socket(handle)? }.with_datagram(|datagram| datagram.connect(addr))?;
        address_text(env, local)
    }
}

export! {
    /// Dissolves the association; returns the local "ip:port".
    fn Java_rdmanio_nio_DatagramNative_disconnect<'l>(env, handle: jlong) -> JString<'l> {
        // SAFETY: as above.
        let local = unsafe { socket(handle)? }.with_datagram(|datagram| datagram.disconnect())?;
        address_text(env, local)
    }
}

export! {
    /// Sends the buffer's range as one datagram to ip:port, or to the
    /// connected peer when `port` is negative: its length, or
    /// `status::UNAVAILABLE` when there is no room and not `block`.
    fn Java_rdmanio_nio_DatagramNative_send<'l>(
        env,
        handle: jlong,
        buffer: JByteBuffer<'l>,
        position: jint,
        length: jint,
        ip: JString<'l>,
        port: jint,
        block: jboolean,
    ) -> jint {
        let data = direct_bytes(env, &buffer, position, length)?;
        let to = if port < 0 { None } else { Some(socket_addr(env, &ip, port)?) };
        // SAFETY: as above.
        let sent = unsafe { socket(handle)? }.send_to(data, to, block)?;
        Ok(sent.map_or(status::UNAVAILABLE as jint, |n| n as jint))
    }
}

export! {
    /// Receives one datagram into the buffer's range (truncated to fit): its
    /// length, or `status::UNAVAILABLE` when none waits and not `block`. The
    /// sender goes into `sender` (a direct buffer of 24 bytes): its IP
    /// version (4 or 6) in byte 0, the port in bytes 2-3 and the IPv6 scope
    /// id in bytes 4-7 (big-endian), the address from byte 8.
    fn Java_rdmanio_nio_DatagramNative_receive<'l>(
        env,
        handle: jlong,
        buffer: JByteBuffer<'l>,
        position: jint,
        length: jint,
        block: jboolean,
        timeout_millis: jint,
        sender: JByteBuffer<'l>,
    ) -> jint {
        let out = direct_bytes(env, &buffer, position, length)?;
        let sender = direct_bytes(env, &sender, 0, SENDER_BYTES as jint)?;
        // SAFETY: as above.
        let received = unsafe { socket(handle)? }.receive_from(out, block, timeout(timeout_millis))?;
        let Some((n, from)) = received else {
            return Ok(status::UNAVAILABLE as jint);
        };
        sender.fill(0);
        sender[2..4].copy_from_slice(&from.port().to_be_bytes());
        match from {
            SocketAddr::V4(v4) => {
                sender[0] = 4;
                sender[8..12].copy_from_slice(&v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                sender[0] = 6;
                sender[4..8].copy_from_slice(&v6.scope_id().to_be_bytes());
                sender[8..24].copy_from_slice(&v6.ip().octets());
            }
        }
        Ok(n as jint)
    }
}

export! {
    /// Sets option `option` (`DatagramOption`'s order) to `value`.
    fn Java_rdmanio_nio_DatagramNative_setOption<'l>(_, handle: jlong, option: jint, value: jint) {
        let option = DatagramOption::try_from(option)?;
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.with_datagram(|datagram| datagram.set_option(option, value))?)
    }
}

export! {
    fn Java_rdmanio_nio_DatagramNative_getOption<'l>(_, handle: jlong, option: jint) -> jint {
        let option = DatagramOption::try_from(option)?;
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }.with_datagram(|datagram| datagram.option(option))?)
    }
}

export! {
    /// Joins, leaves, blocks or unblocks (`Membership`'s order) `group` on
    /// interface `index`; `source` "" for a membership of every source.
    fn Java_rdmanio_nio_DatagramNative_membership<'l>(
        env,
        handle: jlong,
        op: jint,
        group: JString<'l>,
        index: jint,
        source: JString<'l>,
    ) {
        let op = Membership::try_from(op)?;
        let group = ip(env, &group)?.ok_or_else(|| Error::InvalidArgument("no group".into()))?;
        let source = ip(env, &source)?;
        // SAFETY: as above.
        Ok(unsafe { socket(handle)? }
            .with_datagram(|datagram| datagram.membership(op, group, index as u32, source))?)
    }
}

export! {
    /// A `java.net.DatagramPacket`'s buffer length: its private `bufLength`,
    /// what a receive may fill (`getLength` tells the last datagram's length
    /// instead once one was received into it).
    fn Java_rdmanio_nio_DatagramNative_packetCapacity<'l>(env, packet: JObject<'l>) -> jint {
        Ok(env.get_field(&packet, jni::jni_str!("bufLength"), jni::jni_sig!("I"))?.i()?)
    }
}

export! {
    /// Sets a received packet's length and leaves its buffer length, as the
    /// JDK's own receive does (`setLength` would shrink both).
    fn Java_rdmanio_nio_DatagramNative_setReceivedLength<'l>(env, packet: JObject<'l>, length: jint) {
        env.set_field(&packet, jni::jni_str!("length"), jni::jni_sig!("I"), JValue::Int(length))?;
        Ok(())
    }
}
