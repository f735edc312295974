//! The engine's two faces to other languages: JNI for the Java classes
//! `rdmanio.Native` and `rdmanio.nio.SocketNative` ([`jni`]), and the C ABI
//! ([`ffi`]). Both only convert arguments, call the core and map results; what
//! they share is here: address parsing, timeouts, panic text.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;

pub mod ffi;
pub(crate) mod jni;

/// An IP address in text and a port, as both bindings receive them. An IPv6
/// address may carry a scope, by interface name or number, as Java's
/// `getHostAddress` writes it ("fe80::1%eth0", "::1%lo", "fe80::1%2").
pub(crate) fn socket_addr(text: &str, port: i64) -> Result<SocketAddr> {
    let invalid = || Error::InvalidArgument(format!("'{text}' is not an IP address"));
    let port =
        u16::try_from(port).map_err(|_| Error::InvalidArgument(format!("port {port} out of range")))?;
    let (ip, scope) = match text.split_once('%') {
        Some((ip, scope)) => (ip, Some(scope)),
        None => (text, None),
    };
    match (ip.parse::<IpAddr>().map_err(|_| invalid())?, scope) {
        (ip, None) => Ok(SocketAddr::new(ip, port)),
        (IpAddr::V6(ip), Some(scope)) => {
            let scope_id = match scope.parse::<u32>() {
                Ok(index) => index,
                Err(_) => sys::interface_index(scope)?,
            };
            Ok(SocketAddrV6::new(ip, port, 0, scope_id).into())
        }
        (IpAddr::V4(_), Some(_)) => Err(invalid()),
    }
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
    fn ipv6_literals_keep_their_scope_by_name_or_number() {
        let SocketAddr::V6(named) = socket_addr("::1%lo", 7).unwrap() else { panic!("not IPv6") };
        assert_eq!(
            (named.ip().segments()[7], named.port(), named.scope_id()),
            (1, 7, 1),
            "lo is interface 1"
        );
        let SocketAddr::V6(numbered) = socket_addr("fe80::1%3", 7).unwrap() else { panic!("not IPv6") };
        assert_eq!(numbered.scope_id(), 3);
        let err = socket_addr("fe80::1%no-such-interface", 7).unwrap_err().to_string();
        assert!(err.contains("no-such-interface"), "{err}");
        assert!(socket_addr("127.0.0.1%lo", 7).is_err(), "IPv4 has no scope");
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
