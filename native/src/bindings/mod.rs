//! The engine's two faces to other languages: JNI for the Java classes
//! `rdmanio.Native` and `rdmanio.nio.SocketNative` ([`jni`]), and the C ABI
//! ([`ffi`]). Both only convert arguments, call the core and map results; what
//! they share is here: address parsing, timeouts, panic text.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::{Error, Result};

pub mod ffi;
pub(crate) mod jni;

/// An IP address in text and a port, as both bindings receive them.
pub(crate) fn socket_addr(ip: &str, port: i64) -> Result<SocketAddr> {
    let ip: IpAddr =
        ip.parse().map_err(|_| Error::InvalidArgument(format!("'{ip}' is not an IP address")))?;
    let port =
        u16::try_from(port).map_err(|_| Error::InvalidArgument(format!("port {port} out of range")))?;
    Ok(SocketAddr::new(ip, port))
}

/// A timeout in milliseconds as both bindings pass it: negative waits forever.
pub(crate) fn timeout_millis(millis: i64) -> Option<Duration> {
    u64::try_from(millis).ok().map(Duration::from_millis)
}

/// The message of a caught panic.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_timeouts_wait_forever() {
        assert_eq!(timeout_millis(-1), None);
        assert_eq!(timeout_millis(250), Some(Duration::from_millis(250)));
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(socket_addr("::1", 7).unwrap(), "[::1]:7".parse().unwrap());
        assert!(socket_addr("nowhere", 7)
            .unwrap_err()
            .to_string()
            .contains("'nowhere' is not an IP address"));
        assert!(socket_addr("127.0.0.1", 70000).unwrap_err().to_string().contains("port 70000 out of range"));
    }
}
