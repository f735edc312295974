//! The JNI exports: `native` for the Java class `rdmanio.Native` (the message
//! API), `socket_native` for `rdmanio.nio.SocketNative` (the provider),
//! `datagram_native` for `rdmanio.nio.DatagramNative` (its datagram channels), and
//! `logger`, which forwards the engine's `log` records to `java.util.logging`.
//!
//! Each export is written with [`export!`] (or, on a hot path, [`export_lean!`]):
//! it only converts its arguments, calls the engine and returns; every error
//! and every panic becomes a Java exception in one place (`ThrowJavaException`),
//! never a crash.

use std::net::SocketAddr;
use std::time::Duration;

use jni::errors::ErrorPolicy;
use jni::objects::{JByteBuffer, JString};
use jni::strings::JNIString;
use jni::sys::jint;
use jni::Env;

use super::panic_text;
use crate::error::Error;

mod datagram_native;
pub(crate) mod logger;
mod native;
mod socket_native;

/// Defines one JNI export: the `extern "system"` function with the JNI frame
/// (environment and class) around `body`, which sees the environment as its
/// first parameter, returns a `JniResult`, and whose error or panic becomes a
/// Java exception (`ThrowJavaException`) with the return type's default value.
macro_rules! export {
    ($(#[$attr:meta])* fn $name:ident<$l:lifetime>($env:pat $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        #[no_mangle]
        extern "system" fn $name<$l>(
            mut env: ::jni::EnvUnowned<$l>,
            _class: ::jni::objects::JClass<$l>,
            $($arg: $ty),*
        ) $(-> $ret)? {
            env.with_env(|$env| -> $crate::bindings::jni::JniResult<_> { $body })
                .resolve::<$crate::bindings::jni::ThrowJavaException>()
        }
    };
}
pub(crate) use export;

/// Defines a JNI export on a hot path (a read, a write, a select), whose
/// arguments are numbers and direct buffers: as [`export!`], but its body gets
/// a [`LeanEnv`] instead of the jni crate's `Env`, whose frame (a thread-level
/// guard, and an exception check before each JNI call and after the body) made
/// an empty non-blocking tcp read cost 635 ns against 505 ns without it (the
/// JDK's: 355). An error or a panic still leaves through the crate's frame, as
/// the same Java exception.
macro_rules! export_lean {
    ($(#[$attr:meta])* fn $name:ident($env:ident $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        #[no_mangle]
        extern "system" fn $name(
            raw_env: *mut ::jni::sys::JNIEnv,
            _class: ::jni::sys::jclass,
            $($arg: $ty),*
        ) $(-> $ret)? {
            let outcome = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| {
                // SAFETY: the JVM calls a native method with its thread's environment.
                let $env = unsafe { $crate::bindings::jni::LeanEnv::new(raw_env) };
                (|| -> $crate::bindings::jni::JniResult<_> { $body })()
            }));
            $crate::bindings::jni::lean_outcome(raw_env, outcome)
        }
    };
}
pub(crate) use export_lean;

/// An [`export_lean!`]'s result: its value, or the Java exception its error or
/// panic maps to (thrown through the crate's frame, as an [`export!`]'s).
pub(crate) fn lean_outcome<T: Default>(
    raw_env: *mut jni::sys::JNIEnv,
    outcome: std::thread::Result<JniResult<T>>,
) -> T {
    match outcome {
        Ok(Ok(value)) => value,
        failure => {
            // SAFETY: the environment the JVM passed to the export, still inside its call.
            let mut env = unsafe { jni::EnvUnowned::from_raw(raw_env) };
            env.with_env(|_| match failure {
                Ok(result) => result,
                // Raised again inside the crate's frame, whose policy turns it into the exception.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .resolve::<ThrowJavaException>()
        }
    }
}

/// A native method's JNI environment, reaching direct buffers and nothing else.
pub(crate) struct LeanEnv(*mut jni::sys::JNIEnv);

impl LeanEnv {
    /// # Safety
    /// `raw_env` is the environment the JVM passed to the running native method,
    /// and the `LeanEnv` lives no longer than that call.
    pub(crate) unsafe fn new(raw_env: *mut jni::sys::JNIEnv) -> Self {
        LeanEnv(raw_env)
    }

    /// The address and capacity of a direct buffer.
    pub(crate) fn direct_buffer(&self, buffer: jni::sys::jobject) -> JniResult<(*mut u8, usize)> {
        if buffer.is_null() {
            // HotSpot reads a null buffer's address field rather than refusing it.
            return Err(Error::InvalidArgument("no buffer".into()).into());
        }
        // SAFETY: a live environment (`new`'s contract) on its own thread, with no
        // exception pending (the JVM calls no native method with one); both functions
        // (JNI 1.4, which the jni crate requires) answer null and -1 for an object
        // that is not a direct buffer and throw nothing.
        let (address, capacity) = unsafe {
            let functions = &(**self.0).v1_4;
            (
                (functions.GetDirectBufferAddress)(self.0, buffer),
                (functions.GetDirectBufferCapacity)(self.0, buffer),
            )
        };
        match usize::try_from(capacity) {
            Ok(capacity) if !address.is_null() => Ok((address.cast(), capacity)),
            _ => Err(Error::InvalidArgument("not a direct buffer".into()).into()),
        }
    }

    /// The `length` bytes at `position` of a direct buffer, bounds-checked.
    pub(crate) fn direct_bytes<'b>(
        &self,
        buffer: jni::sys::jobject,
        position: jint,
        length: jint,
    ) -> JniResult<&'b mut [u8]> {
        let (address, capacity) = self.direct_buffer(buffer)?;
        // SAFETY: the JVM's address and capacity of a direct buffer the caller keeps reachable.
        unsafe { buffer_range(address, capacity, position, length) }
    }
}

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
        // A link that went down: the JDK's sockets report what follows from it as SocketExceptions.
        // As the JDK's sockets report ETIMEDOUT (keepalive) too.
        Error::ConnectionReset | Error::DeviceFailed(_) | Error::PeerSilent { .. } => {
            "java/net/SocketException"
        }
        Error::PortUnreachable => "java/net/PortUnreachableException",
        Error::Unreachable { .. } | Error::NotLocal(_) => "java/net/NoRouteToHostException",
        Error::InvalidArgument(_) | Error::MessageTooLarge { .. } => "java/lang/IllegalArgumentException",
        // A Java channel closed under a blocked operation turns this into
        // AsynchronousCloseException or ClosedByInterruptException itself (in `end`).
        Error::Closed(_) => "java/io/IOException",
        // As the JDK's sockets report the same errno values.
        Error::Os { source, .. }
            if matches!(
                source.raw_os_error(),
                Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL | libc::EACCES)
            ) =>
        {
            "java/net/BindException"
        }
        Error::Os { source, .. } if source.raw_os_error() == Some(libc::EHOSTUNREACH) => {
            "java/net/NoRouteToHostException"
        }
        // A datagram longer than the socket takes ("Message too long"), as the JDK's.
        Error::Os { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENETUNREACH | libc::EMSGSIZE)) =>
        {
            "java/net/SocketException"
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
    match env.throw_new(JNIString::from(class), JNIString::from(message)) {
        // The jni crate reports the exception it just made pending as `JavaException`.
        Ok(()) | Err(jni::errors::Error::JavaException) => {}
        Err(err) => log::error!("cannot throw {class}({message}): {err}"),
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
        let message = format!("rdma-nio internal error: {}", panic_text(payload.as_ref()));
        throw(env, "rdmanio/RdmaException", &message);
        Ok(T::default())
    }
}

/// An IP address and port from Java (`ip` is text, as `InetAddress.getHostAddress` gives it).
pub(crate) fn socket_addr(env: &Env<'_>, ip: &JString<'_>, port: jint) -> JniResult<SocketAddr> {
    Ok(super::socket_addr(&ip.try_to_string(env)?, port.into())?)
}

/// A timeout in milliseconds from Java: negative waits forever.
pub(crate) fn timeout(millis: jint) -> Option<Duration> {
    super::timeout_millis(millis.into())
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
    // SAFETY: the JVM's address and capacity of a direct buffer the caller keeps reachable.
    unsafe { buffer_range(address, capacity, position, length) }
}

/// The `length` bytes at `position` of the direct buffer at `address`, bounds-checked.
///
/// # Safety
/// `address` and `capacity` are a direct buffer's, which the caller keeps
/// reachable (and so its memory alive) for the duration of the native call.
unsafe fn buffer_range<'b>(
    address: *mut u8,
    capacity: usize,
    position: jint,
    length: jint,
) -> JniResult<&'b mut [u8]> {
    let (Ok(position), Ok(length)) = (usize::try_from(position), usize::try_from(length)) else {
        return Err(Error::InvalidArgument(format!("negative position {position} or length {length}")).into());
    };
    if position.checked_add(length).is_none_or(|end| end > capacity) {
        return Err(Error::InvalidArgument(format!(
            "range {position}+{length} exceeds the buffer's capacity {capacity}"
        ))
        .into());
    }
    // SAFETY: the range lies inside the buffer (checked above; the rest is the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts_mut(address.add(position), length) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> Error {
        Error::Os { op: "connect(tcp)", source: std::io::Error::from_raw_os_error(errno) }
    }

    /// The exception classes the JDK's sockets throw for the same errno values.
    #[test]
    fn os_errors_map_to_the_jdks_exceptions() {
        assert_eq!(exception_class(&os(libc::EHOSTUNREACH)), "java/net/NoRouteToHostException");
        assert_eq!(exception_class(&os(libc::ENETUNREACH)), "java/net/SocketException");
        assert_eq!(exception_class(&os(libc::EMSGSIZE)), "java/net/SocketException");
        for errno in [libc::EADDRINUSE, libc::EADDRNOTAVAIL, libc::EACCES] {
            assert_eq!(exception_class(&os(errno)), "java/net/BindException");
        }
        assert_eq!(
            exception_class(&Error::ConnectionRefused("127.0.0.1:1".parse().unwrap())),
            "java/net/ConnectException"
        );
        // A peer that stopped answering keepalive probes: as ETIMEDOUT on the JDK's sockets.
        let silent = Error::PeerSilent { peer: "127.0.0.1:1".parse().unwrap(), status: "retries".into() };
        assert_eq!(exception_class(&silent), "java/net/SocketException");
    }
}
