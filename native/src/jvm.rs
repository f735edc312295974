//! JNI exports for the Java class `rdmanio.Native`. Each export only converts
//! its arguments, calls the engine and returns; every error and every panic
//! becomes a Java exception in one place (`ThrowJavaException`), never a crash.
//!
//! Handles are `Box` pointers passed to Java as `long`. The Java side owns them:
//! it closes each exactly once and never uses one concurrently or after close.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use jni::errors::ErrorPolicy;
use jni::objects::{JByteBuffer, JClass, JObjectArray, JString};
use jni::strings::JNIString;
use jni::sys::{jint, jlong};
use jni::{Env, EnvUnowned};

use crate::ffi::panic_text;
use crate::{device_names, Connection, Error, Listener};

/// What can fail inside an export: the engine, or JNI itself.
pub(crate) enum JniError {
    Engine(Error),
    Jni(jni::errors::Error),
}

impl From<Error> for JniError {
    fn from(err: Error) -> Self {
        JniError::Engine(err)
    }
}

impl From<jni::errors::Error> for JniError {
    fn from(err: jni::errors::Error) -> Self {
        JniError::Jni(err)
    }
}

pub(crate) type JniResult<T> = std::result::Result<T, JniError>;

/// The Java exception class for an engine error (the one mapping to Java).
fn exception_class(err: &Error) -> &'static str {
    match err {
        Error::NoDevice(_) => "rdmanio/NoRdmaDeviceException",
        Error::TimedOut { .. } => "java/net/SocketTimeoutException",
        Error::ConnectionRefused(_) | Error::SendsOnly(_) => "java/net/ConnectException",
        Error::Unreachable { .. } => "java/net/NoRouteToHostException",
        Error::InvalidArgument(_) | Error::MessageTooLarge { .. } => "java/lang/IllegalArgumentException",
        // A Java channel closed under a blocked operation turns this into
        // AsynchronousCloseException or ClosedByInterruptException itself (in `end`).
        Error::Closed(_) => "java/io/IOException",
        Error::Os { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)) =>
        {
            "java/net/BindException"
        }
        Error::Disconnected
        | Error::Failed(_)
        | Error::Os { .. }
        | Error::UnexpectedEvent { .. }
        | Error::Completion { .. }
        | Error::Violation(_) => "rdmanio/RdmaException",
    }
}

fn throw(env: &mut Env<'_>, class: &str, message: &str) {
    if env.exception_check() {
        return; // the first exception wins
    }
    if let Err(err) = env.throw_new(JNIString::from(class), JNIString::from(message)) {
        log::error!("cannot throw {class}({message}): {err}");
    }
}

/// Throws the Java exception for an error or a panic and returns a default value.
pub(crate) struct ThrowJavaException;

impl<T: Default> ErrorPolicy<T, JniError> for ThrowJavaException {
    type Captures<'unowned_env_local: 'native_method, 'native_method> = ();

    fn on_error<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _captures: &mut Self::Captures<'unowned_env_local, 'native_method>,
        err: JniError,
    ) -> jni::errors::Result<T> {
        match err {
            JniError::Jni(jni::errors::Error::JavaException) => {} // already pending
            JniError::Jni(err) => throw(env, "rdmanio/RdmaException", &format!("JNI call failed: {err}")),
            JniError::Engine(err) => throw(env, exception_class(&err), &err.to_string()),
        }
        Ok(T::default())
    }

    fn on_panic<'unowned_env_local: 'native_method, 'native_method>(
        env: &mut Env<'unowned_env_local>,
        _captures: &mut Self::Captures<'unowned_env_local, 'native_method>,
        payload: Box<dyn std::any::Any + Send + 'static>,
    ) -> jni::errors::Result<T> {
        let message = format!("rdma-nio internal error: {}", panic_text(&payload));
        throw(env, "rdmanio/RdmaException", &message);
        Ok(T::default())
    }
}

pub(crate) fn socket_addr(env: &Env<'_>, ip: &JString<'_>, port: jint) -> JniResult<SocketAddr> {
    let text = ip.try_to_string(env)?;
    let ip: IpAddr =
        text.parse().map_err(|_| Error::InvalidArgument(format!("'{text}' is not an IP address")))?;
    let port =
        u16::try_from(port).map_err(|_| Error::InvalidArgument(format!("port {port} out of range")))?;
    Ok(SocketAddr::new(ip, port))
}

pub(crate) fn timeout(millis: jint) -> Option<Duration> {
    u64::try_from(millis).ok().map(Duration::from_millis)
}

/// # Safety
/// `handle` is 0 or a live handle of type `T` from this module.
unsafe fn borrow<'a, T>(handle: jlong) -> JniResult<&'a mut T> {
    let ptr = handle as *mut T;
    // SAFETY: per the contract above.
    Ok(unsafe { ptr.as_mut() }.ok_or_else(|| Error::InvalidArgument("closed handle".into()))?)
}

fn into_handle<T>(value: T) -> jlong {
    Box::into_raw(Box::new(value)) as jlong
}

/// The `length` bytes at `position` of a direct buffer, bounds-checked.
pub(crate) fn direct_bytes<'b>(
    env: &Env<'_>,
    buffer: &JByteBuffer<'_>,
    position: jint,
    length: jint,
) -> JniResult<&'b mut [u8]> {
    let address = env.get_direct_buffer_address(buffer)?;
    let capacity = env.get_direct_buffer_capacity(buffer)?;
    let (Ok(position), Ok(length)) = (usize::try_from(position), usize::try_from(length)) else {
        return Err(Error::InvalidArgument(format!("negative position {position} or length {length}")).into());
    };
    if position.checked_add(length).is_none_or(|end| end > capacity) {
        return Err(Error::InvalidArgument(format!(
            "range {position}+{length} exceeds the buffer's capacity {capacity}"
        ))
        .into());
    }
    // SAFETY: the range lies inside the direct buffer, which the caller keeps
    // reachable (and so its memory alive) for the duration of the native call.
    Ok(unsafe { std::slice::from_raw_parts_mut(address.add(position), length) })
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_deviceNames<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
) -> JObjectArray<'local, JString<'local>> {
    env.with_env(|env| -> JniResult<_> {
        let names = device_names()?;
        let empty = JString::from_str(env, "")?;
        let array = JObjectArray::<JString>::new(env, names.len(), &empty)?;
        for (i, name) in names.iter().enumerate() {
            let name = JString::from_str(env, name)?;
            array.set_element(env, i, &name)?;
        }
        Ok(array)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_listen<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    ip: JString<'local>,
    port: jint,
    backlog: jint,
) -> jlong {
    env.with_env(|env| -> JniResult<_> {
        Ok(into_handle(Listener::bind(socket_addr(env, &ip, port)?, backlog)?))
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_listenerPort<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    listener: jlong,
) -> jint {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: the Java side passes a live listener handle.
        Ok(jint::from(unsafe { borrow::<Listener>(listener)? }.local_addr().port()))
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_accept<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    listener: jlong,
    timeout_millis: jint,
) -> jlong {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        let listener = unsafe { borrow::<Listener>(listener)? };
        Ok(into_handle(listener.accept(timeout(timeout_millis))?))
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_connect<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    ip: JString<'local>,
    port: jint,
    timeout_millis: jint,
) -> jlong {
    env.with_env(|env| -> JniResult<_> {
        Ok(into_handle(Connection::connect(socket_addr(env, &ip, port)?, timeout(timeout_millis))?))
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_send<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    connection: jlong,
    buffer: JByteBuffer<'local>,
    position: jint,
    length: jint,
    timeout_millis: jint,
) {
    env.with_env(|env| -> JniResult<_> {
        // SAFETY: the Java side passes a live connection handle.
        let connection = unsafe { borrow::<Connection>(connection)? };
        connection.send(direct_bytes(env, &buffer, position, length)?, timeout(timeout_millis))?;
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}

/// Returns the message length, or -1 at end of stream.
#[no_mangle]
extern "system" fn Java_rdmanio_Native_receive<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    connection: jlong,
    buffer: JByteBuffer<'local>,
    position: jint,
    length: jint,
    timeout_millis: jint,
) -> jint {
    env.with_env(|env| -> JniResult<_> {
        // SAFETY: as above.
        let connection = unsafe { borrow::<Connection>(connection)? };
        let received =
            connection.recv(direct_bytes(env, &buffer, position, length)?, timeout(timeout_millis))?;
        // A message is at most MAX_MESSAGE_SIZE bytes, so it fits a jint.
        Ok(received.map_or(-1, |len| len as jint))
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_setBusyPoll<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    connection: jlong,
    micros: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        let micros = u64::try_from(micros)
            .map_err(|_| Error::InvalidArgument(format!("negative busy-poll time {micros} us")))?;
        // SAFETY: as above.
        unsafe { borrow::<Connection>(connection)? }.set_busy_poll(Duration::from_micros(micros));
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_queuePairNumber<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    connection: jlong,
) -> jint {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above. QP numbers are 24-bit, so they fit a jint.
        Ok(unsafe { borrow::<Connection>(connection)? }.qp_num() as jint)
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_deviceName<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    connection: jlong,
) -> JString<'local> {
    env.with_env(|env| -> JniResult<_> {
        // SAFETY: as above.
        let name = unsafe { borrow::<Connection>(connection)? }.device_name();
        Ok(JString::from_str(env, name)?)
    })
    .resolve::<ThrowJavaException>()
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

#[no_mangle]
extern "system" fn Java_rdmanio_Native_closeConnection<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    connection: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: the Java side closes each handle exactly once.
        unsafe { close_handle::<Connection>(connection) };
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}

#[no_mangle]
extern "system" fn Java_rdmanio_Native_closeListener<'local>(
    mut env: EnvUnowned<'local>,
    _class: JClass<'local>,
    listener: jlong,
) {
    env.with_env(|_| -> JniResult<_> {
        // SAFETY: as above.
        unsafe { close_handle::<Listener>(listener) };
        Ok(())
    })
    .resolve::<ThrowJavaException>()
}
