//! The exports behind `rdmanio.Native`: the two-sided message API
//! (`RdmaListener`, `RdmaConnection`, `RdmaDevices`).
//!
//! Handles are `Box` pointers passed to Java as `long`. The Java side owns them:
//! it closes each exactly once and never uses one concurrently or after close.

use std::time::Duration;

use jni::objects::{JByteBuffer, JObjectArray, JString};
use jni::sys::{jint, jlong};

use super::{direct_bytes, export, socket_addr, timeout, JniResult};
use crate::{device_names, Connection, Error, Listener};

/// # Safety
/// `handle` is 0 or a live handle of type `T` from `into_handle`.
unsafe fn borrow<'a, T>(handle: jlong) -> JniResult<&'a mut T> {
    let ptr = handle as *mut T;
    // SAFETY: per the contract above.
    Ok(unsafe { ptr.as_mut() }.ok_or_else(|| Error::InvalidArgument("closed handle".into()))?)
}

fn into_handle<T>(value: T) -> jlong {
    Box::into_raw(Box::new(value)) as jlong
}

/// Frees a handle from `into_handle`; 0 (already closed on the Java side) is ignored.
///
/// # Safety
/// `handle` is 0 or a live handle of type `T`, closed exactly once.
unsafe fn close_handle<T>(handle: jlong) {
    if handle != 0 {
        // SAFETY: per the contract above.
        drop(unsafe { Box::from_raw(handle as *mut T) });
    }
}

export! {
    fn Java_rdmanio_Native_deviceNames<'l>(env) -> JObjectArray<'l, JString<'l>> {
        let names = device_names()?;
        let empty = JString::from_str(env, "")?;
        let array = JObjectArray::<JString>::new(env, names.len(), &empty)?;
        for (i, name) in names.iter().enumerate() {
            let name = JString::from_str(env, name)?;
            array.set_element(env, i, &name)?;
        }
        Ok(array)
    }
}

export! {
    fn Java_rdmanio_Native_listen<'l>(env, ip: JString<'l>, port: jint, backlog: jint) -> jlong {
        Ok(into_handle(Listener::bind(socket_addr(env, &ip, port)?, backlog)?))
    }
}

export! {
    fn Java_rdmanio_Native_listenerPort<'l>(_, listener: jlong) -> jint {
        // SAFETY: the Java side passes a live listener handle.
        Ok(jint::from(unsafe { borrow::<Listener>(listener)? }.local_addr().port()))
    }
}

export! {
    fn Java_rdmanio_Native_accept<'l>(_, listener: jlong, timeout_millis: jint) -> jlong {
        // SAFETY: as above.
        let listener = unsafe { borrow::<Listener>(listener)? };
        Ok(into_handle(listener.accept(timeout(timeout_millis))?))
    }
}

export! {
    fn Java_rdmanio_Native_connect<'l>(env, ip: JString<'l>, port: jint, timeout_millis: jint) -> jlong {
        Ok(into_handle(Connection::connect(socket_addr(env, &ip, port)?, timeout(timeout_millis))?))
    }
}

export! {
    fn Java_rdmanio_Native_send<'l>(
        env,
        connection: jlong,
        buffer: JByteBuffer<'l>,
        position: jint,
        length: jint,
        timeout_millis: jint,
    ) {
        // SAFETY: the Java side passes a live connection handle.
        let connection = unsafe { borrow::<Connection>(connection)? };
        connection.send(direct_bytes(env, &buffer, position, length)?, timeout(timeout_millis))?;
        Ok(())
    }
}

export! {
    /// Returns the message length, or -1 at end of stream.
    fn Java_rdmanio_Native_receive<'l>(
        env,
        connection: jlong,
        buffer: JByteBuffer<'l>,
        position: jint,
        length: jint,
        timeout_millis: jint,
    ) -> jint {
        // SAFETY: as above.
        let connection = unsafe { borrow::<Connection>(connection)? };
        let received = connection.recv(direct_bytes(env, &buffer, position, length)?, timeout(timeout_millis))?;
        // A message is at most MAX_MESSAGE_SIZE bytes, so it fits a jint.
        Ok(received.map_or(-1, |len| len as jint))
    }
}

export! {
    fn Java_rdmanio_Native_setBusyPoll<'l>(_, connection: jlong, micros: jlong) {
        let micros = u64::try_from(micros)
            .map_err(|_| Error::InvalidArgument(format!("negative busy-poll time {micros} us")))?;
        // SAFETY: as above.
        unsafe { borrow::<Connection>(connection)? }.set_busy_poll(Duration::from_micros(micros));
        Ok(())
    }
}

export! {
    fn Java_rdmanio_Native_queuePairNumber<'l>(_, connection: jlong) -> jint {
        // SAFETY: as above. QP numbers are 24-bit, so they fit a jint.
        Ok(unsafe { borrow::<Connection>(connection)? }.qp_num() as jint)
    }
}

export! {
    fn Java_rdmanio_Native_deviceName<'l>(env, connection: jlong) -> JString<'l> {
        // SAFETY: as above.
        let name = unsafe { borrow::<Connection>(connection)? }.device_name();
        Ok(JString::from_str(env, name)?)
    }
}

export! {
    fn Java_rdmanio_Native_closeConnection<'l>(_, connection: jlong) {
        // SAFETY: the Java side closes each handle exactly once.
        unsafe { close_handle::<Connection>(connection) };
        Ok(())
    }
}

export! {
    fn Java_rdmanio_Native_closeListener<'l>(_, listener: jlong) {
        // SAFETY: as above.
        unsafe { close_handle::<Listener>(listener) };
        Ok(())
    }
}
