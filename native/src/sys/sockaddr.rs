//! IP socket addresses in the C layout (`sockaddr_in`, `sockaddr_in6`), both ways.

use std::mem;
use std::net::SocketAddr;

/// Reads a C socket address; `None` for an unset (or non-IP) one.
pub(crate) fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let raw = storage as *const libc::sockaddr_storage;
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(raw as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(raw as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(std::net::SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// A socket address in the C layout that the kernel and librdmacm take.
pub(crate) struct SockAddr(pub(crate) libc::sockaddr_storage);

impl SockAddr {
    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.0 as *mut libc::sockaddr_storage).cast()
    }
}

impl SockAddr {
    /// The length of the address in it, for `bind(2)`.
    pub(crate) fn len(&self) -> libc::socklen_t {
        match self.0.ss_family as libc::c_int {
            libc::AF_INET => mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            _ => mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        }
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> Self {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        match addr {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                sin6.sin6_flowinfo = v6.flowinfo();
                sin6.sin6_scope_id = v6.scope_id();
            }
        }
        SockAddr(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_are_laid_out_in_network_order() {
        let mut addr = SockAddr::from("192.0.2.1:18515".parse::<SocketAddr>().unwrap());
        // SAFETY: the storage was filled as a sockaddr_in.
        let sin = unsafe { &*(addr.as_mut_ptr() as *const libc::sockaddr_in) };
        assert_eq!(sin.sin_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(sin.sin_port.to_ne_bytes(), 18515u16.to_be_bytes());
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [192, 0, 2, 1]);
    }

    #[test]
    fn socket_addresses_survive_the_round_trip_through_c() {
        for text in ["192.0.2.1:18515", "[2001:db8::7]:1", "[fe80::1%3]:7000"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(socket_addr(&SockAddr::from(addr).0), Some(addr), "{text}");
        }
        // SAFETY: all-zero is a valid (AF_UNSPEC) sockaddr_storage.
        assert_eq!(socket_addr(&unsafe { mem::zeroed() }), None);
    }

    #[test]
    fn ipv6_addresses_keep_scope_and_port() {
        let mut addr = SockAddr::from("[fe80::1%3]:7000".parse::<SocketAddr>().unwrap());
        // SAFETY: the storage was filled as a sockaddr_in6.
        let sin6 = unsafe { &*(addr.as_mut_ptr() as *const libc::sockaddr_in6) };
        assert_eq!(sin6.sin6_family, libc::AF_INET6 as libc::sa_family_t);
        assert_eq!(sin6.sin6_port.to_ne_bytes(), 7000u16.to_be_bytes());
        assert_eq!(sin6.sin6_scope_id, 3);
        assert_eq!(sin6.sin6_addr.s6_addr[0..2], [0xfe, 0x80]);
        assert_eq!(sin6.sin6_addr.s6_addr[15], 1);
    }
}
