//! A kernel UDP socket behind the byte-stream face, for the provider's
//! `java.nio.channels.DatagramChannel`: a connected channel reads and writes
//! through the face (one datagram per call), and the unconnected calls
//! (`try_send_to`, `try_receive_from`), binding, options and multicast
//! memberships are its own. Its readiness is kept as the tcp medium's is (see
//! `TcpByteStream`), so a selector's epoll set serves it like any socket.
//! Datagrams go over the kernel, whatever the provider's transport.

use std::mem;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{check, Error, Result};
use crate::media::stream::{ops, ByteStream, Interest, ReadOutcome, WaitSource};
use crate::sys::sockaddr::{socket_addr, SockAddr};
use crate::sys::{self, Deadline};

/// The options a datagram socket takes, by the number the Java side passes
/// (`DatagramNative`'s option constants, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramOption {
    /// `SO_SNDBUF`.
    SendBuffer,
    /// `SO_RCVBUF`.
    ReceiveBuffer,
    /// `SO_REUSEADDR`.
    ReuseAddress,
    /// `SO_REUSEPORT`.
    ReusePort,
    /// `SO_BROADCAST`.
    Broadcast,
    /// `IP_TOS`, or `IPV6_TCLASS` on IPv6.
    TrafficClass,
    /// `IP_MULTICAST_TTL`, or `IPV6_MULTICAST_HOPS` on IPv6.
    MulticastTtl,
    /// `IP_MULTICAST_LOOP`, or `IPV6_MULTICAST_LOOP` on IPv6.
    MulticastLoop,
    /// `IP_MULTICAST_IF` (and `IPV6_MULTICAST_IF` on IPv6). Set only, by interface index (the Java side keeps the interface it set).
    MulticastInterface,
}

impl TryFrom<i32> for DatagramOption {
    type Error = Error;

    fn try_from(id: i32) -> Result<Self> {
        use DatagramOption::*;
        [
            SendBuffer,
            ReceiveBuffer,
            ReuseAddress,
            ReusePort,
            Broadcast,
            TrafficClass,
            MulticastTtl,
            MulticastLoop,
            MulticastInterface,
        ]
        .get(id as usize)
        .copied()
        .ok_or_else(|| Error::InvalidArgument(format!("datagram option {id}")))
    }
}

/// What a multicast membership call does (`DatagramNative`'s constants, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Joins a group (of every source, or of one).
    Join,
    /// Leaves a group joined.
    Leave,
    /// Blocks a source of a group joined for every source.
    Block,
    /// Unblocks a source blocked.
    Unblock,
}

impl TryFrom<i32> for Membership {
    type Error = Error;

    fn try_from(id: i32) -> Result<Self> {
        [Membership::Join, Membership::Leave, Membership::Block, Membership::Unblock]
            .get(id as usize)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("membership operation {id}")))
    }
}

/// `IPV6_MULTICAST_ALL` of `<linux/in6.h>`, which the libc crate has for glibc targets not yet.
const IPV6_MULTICAST_ALL: libc::c_int = 29;

/// A UDP socket: IPv4 only, or IPv6 with IPv4 mapped in (the JDK's default).
pub struct DatagramSocket {
    fd: OwnedFd,
    ipv6: bool,
    /// The local address before the socket connected, which a disconnect restores.
    unconnected_local: Option<SocketAddr>,
    /// What the kernel last said of reading and of writing: `None` not known.
    readable: Option<bool>,
    writable: Option<bool>,
}

impl DatagramSocket {
    /// A new unbound socket; `ipv6`: dual-stack IPv6, else IPv4.
    pub fn open(ipv6: bool) -> Result<DatagramSocket> {
        let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: no pointers; a new fd or -1.
        let fd =
            unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        check("socket(udp)", fd)?;
        // SAFETY: fd is new and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        if ipv6 {
            sys::set_int_option(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0, "setsockopt(IPV6_V6ONLY)")?;
        }
        // Only the groups this socket joined reach it (Linux's default: those
        // any socket on its port joined), as with the JDK's sockets.
        sys::set_int_option(
            raw,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_ALL,
            0,
            "setsockopt(IP_MULTICAST_ALL)",
        )?;
        if ipv6 {
            // Before Linux 4.20 there is none: IPv6 groups then reach every socket on the port.
            let _ = sys::set_int_option(
                raw,
                libc::IPPROTO_IPV6,
                IPV6_MULTICAST_ALL,
                0,
                "setsockopt(IPV6_MULTICAST_ALL)",
            );
        }
        Ok(DatagramSocket { fd, ipv6, unconnected_local: None, readable: None, writable: None })
    }

    /// A socket over an fd made elsewhere (the one a launcher passed on
    /// standard input), of the family `ipv6` says.
    pub(crate) fn over(fd: OwnedFd, ipv6: bool) -> Result<DatagramSocket> {
        sys::set_nonblocking("fcntl(udp)", fd.as_raw_fd())?;
        Ok(DatagramSocket { fd, ipv6, unconnected_local: None, readable: None, writable: None })
    }

    /// The connected peer, if any.
    pub fn peer(&self) -> Option<SocketAddr> {
        let mut storage = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: a live fd and room for any socket address.
        let done = unsafe { libc::getpeername(self.fd.as_raw_fd(), storage.as_mut_ptr(), &mut len) };
        if done != 0 {
            return None;
        }
        socket_addr(&storage.0).map(unmapped)
    }

    /// The address as this socket's family takes it: on IPv6, IPv4's wildcard
    /// is IPv6's (so the socket takes both) and other IPv4 addresses are mapped.
    fn native(&self, addr: SocketAddr) -> Result<SockAddr> {
        Ok(SockAddr::from(match addr {
            SocketAddr::V4(v4) if self.ipv6 => {
                let ip =
                    if v4.ip().is_unspecified() { Ipv6Addr::UNSPECIFIED } else { v4.ip().to_ipv6_mapped() };
                SocketAddr::new(ip.into(), v4.port())
            }
            SocketAddr::V6(_) if !self.ipv6 => {
                return Err(Error::InvalidArgument(format!(
                    "{addr}: an IPv4 socket takes IPv4 addresses only"
                )))
            }
            addr => addr,
        }))
    }

    /// Binds to `addr` (port 0: any); returns the address bound.
    pub fn bind(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        let storage = self.native(addr)?;
        // SAFETY: a live fd and a socket address of the length given.
        check("bind(udp)", unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&storage.0 as *const libc::sockaddr_storage).cast(),
                storage.len(),
            )
        })?;
        self.local()
    }

    /// Connects to `peer`: sends go there and only its datagrams arrive. Those
    /// that arrived from others before are dropped, as the JDK's channel does.
    /// Returns the local address (an unbound socket is bound by it).
    pub fn connect(&mut self, peer: SocketAddr) -> Result<SocketAddr> {
        let storage = self.native(peer)?;
        let before = self.local()?;
        // SAFETY: as in `bind`.
        check("connect(udp)", unsafe {
            libc::connect(
                self.fd.as_raw_fd(),
                (&storage.0 as *const libc::sockaddr_storage).cast(),
                storage.len(),
            )
        })?;
        let mut scrap = [0u8; 1];
        // SAFETY: a live fd and a one-byte buffer (each datagram is dropped whole).
        while unsafe { libc::recv(self.fd.as_raw_fd(), scrap.as_mut_ptr().cast(), 1, libc::MSG_DONTWAIT) }
            >= 0
        {}
        self.readable = None;
        self.unconnected_local.get_or_insert(before);
        self.local()
    }

    /// Dissolves the association; the socket gets back the local address it
    /// had before it connected (Linux unbinds an ephemeral port and an address
    /// the connect chose: it is bound again, as the JDK does).
    pub fn disconnect(&mut self) -> Result<SocketAddr> {
        let Some(before) = self.unconnected_local.take() else {
            return self.local();
        };
        // SAFETY: all-zero is a valid sockaddr; AF_UNSPEC dissolves the association.
        let mut unspec: libc::sockaddr = unsafe { mem::zeroed() };
        unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        // SAFETY: a live fd and a socket address of the size given.
        let done = unsafe {
            libc::connect(self.fd.as_raw_fd(), &unspec, mem::size_of::<libc::sockaddr>() as libc::socklen_t)
        };
        // EAFNOSUPPORT: some kernels report it for the AF_UNSPEC connect that did its work.
        if done != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EAFNOSUPPORT) {
            return Err(Error::last_os("connect(udp, AF_UNSPEC)"));
        }
        let after = self.local()?;
        if after != before && after.port() == 0 {
            return self.bind(before);
        }
        Ok(after)
    }

    /// The local address (port 0 while unbound); IPv4-mapped addresses as IPv4.
    pub fn local(&self) -> Result<SocketAddr> {
        let mut storage = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: a live fd and room for any socket address.
        check("getsockname(udp)", unsafe {
            libc::getsockname(self.fd.as_raw_fd(), storage.as_mut_ptr(), &mut len)
        })?;
        socket_addr(&storage.0)
            .map(unmapped)
            .ok_or_else(|| Error::Failed("getsockname: not an IP address".into()))
    }

    /// Sends one datagram to `to`, or to the connected peer (`None`): its
    /// length, or `None` when there is no room now.
    pub fn try_send_to(&mut self, data: &[u8], to: Option<SocketAddr>) -> Result<Option<usize>> {
        let target = to.map(|to| self.native(to)).transpose()?;
        let (addr, len) = match &target {
            Some(target) => ((&target.0 as *const libc::sockaddr_storage).cast(), target.len()),
            None => (std::ptr::null(), 0),
        };
        loop {
            // SAFETY: a live fd, a buffer of data.len() bytes, and a socket address of `len` bytes or none.
            let n =
                unsafe { libc::sendto(self.fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0, addr, len) };
            if n >= 0 {
                self.writable = Some(true);
                return Ok(Some(n as usize));
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => {
                    self.writable = Some(false);
                    return Ok(None);
                }
                // The answer to an earlier datagram of a connected socket.
                libc::ECONNREFUSED => return Err(Error::PortUnreachable),
                _ => return Err(Error::last_os("sendto(udp)")),
            }
        }
    }

    /// Receives one datagram into `out` (truncated to fit): its length and
    /// sender, or `None` when none is waiting.
    pub fn try_receive_from(&mut self, out: &mut [u8]) -> Result<Option<(usize, SocketAddr)>> {
        let mut from = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        loop {
            let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: a live fd, room for out.len() bytes and for any socket address.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                    0,
                    from.as_mut_ptr(),
                    &mut len,
                )
            };
            if n >= 0 {
                // Another may wait behind this one: the next look asks the kernel.
                self.readable = None;
                let sender =
                    socket_addr(&from.0).map(unmapped).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                return Ok(Some((n as usize, sender)));
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => {
                    self.readable = Some(false);
                    return Ok(None);
                }
                libc::ECONNREFUSED => {
                    self.readable = None;
                    return Err(Error::PortUnreachable);
                }
                _ => return Err(Error::last_os("recvfrom(udp)")),
            }
        }
    }

    /// Sets an option; on IPv6, the IPv4 twin of an IP-level option too (best
    /// effort, as the JDK does), for the IPv4 peers mapped in.
    pub fn set_option(&mut self, option: DatagramOption, value: i32) -> Result<()> {
        let fd = self.fd.as_raw_fd();
        if option == DatagramOption::MulticastInterface {
            return self.set_multicast_interface(value as u32);
        }
        let (level, name, v4_twin) = self.option_name(option);
        sys::set_int_option(fd, level, name, value, "setsockopt(udp)")?;
        if let Some(name) = v4_twin {
            let _ = sys::set_int_option(fd, libc::IPPROTO_IP, name, value, "setsockopt(udp, IPv4)");
        }
        Ok(())
    }

    /// An option's value.
    pub fn option(&self, option: DatagramOption) -> Result<i32> {
        if option == DatagramOption::MulticastInterface {
            return Err(Error::InvalidArgument("the multicast interface is kept by the channel".into()));
        }
        let (level, name, _) = self.option_name(option);
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live fd and room for an int.
        check("getsockopt(udp)", unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        Ok(value)
    }

    /// (level, name, IPv4 twin to set as well) of an int option.
    fn option_name(&self, option: DatagramOption) -> (libc::c_int, libc::c_int, Option<libc::c_int>) {
        use DatagramOption::*;
        let ip = |v6: libc::c_int, v4: libc::c_int| {
            if self.ipv6 {
                (libc::IPPROTO_IPV6, v6, Some(v4))
            } else {
                (libc::IPPROTO_IP, v4, None)
            }
        };
        match option {
            SendBuffer => (libc::SOL_SOCKET, libc::SO_SNDBUF, None),
            ReceiveBuffer => (libc::SOL_SOCKET, libc::SO_RCVBUF, None),
            ReuseAddress => (libc::SOL_SOCKET, libc::SO_REUSEADDR, None),
            ReusePort => (libc::SOL_SOCKET, libc::SO_REUSEPORT, None),
            Broadcast => (libc::SOL_SOCKET, libc::SO_BROADCAST, None),
            TrafficClass => ip(libc::IPV6_TCLASS, libc::IP_TOS),
            MulticastTtl => ip(libc::IPV6_MULTICAST_HOPS, libc::IP_MULTICAST_TTL),
            MulticastLoop => ip(libc::IPV6_MULTICAST_LOOP, libc::IP_MULTICAST_LOOP),
            MulticastInterface => unreachable!("set by set_multicast_interface"),
        }
    }

    fn set_multicast_interface(&mut self, index: u32) -> Result<()> {
        let fd = self.fd.as_raw_fd();
        let by_index = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr { s_addr: 0 },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: index as libc::c_int,
        };
        // SAFETY: a live fd and an ip_mreqn of the size given.
        let v4 = check("setsockopt(IP_MULTICAST_IF)", unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&by_index as *const libc::ip_mreqn).cast(),
                mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
            )
        });
        if !self.ipv6 {
            return v4;
        }
        sys::set_int_option(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            index as i32,
            "setsockopt(IPV6_MULTICAST_IF)",
        )
    }

    /// Joins or leaves `group` on interface `index` (of datagrams from
    /// `source` only, when given), or blocks or unblocks `source` of a
    /// membership of every source.
    pub fn membership(
        &mut self,
        op: Membership,
        group: IpAddr,
        index: u32,
        source: Option<IpAddr>,
    ) -> Result<()> {
        let level = if group.is_ipv4() { libc::IPPROTO_IP } else { libc::IPPROTO_IPV6 };
        let storage = |ip: IpAddr| SockAddr::from(SocketAddr::new(ip, 0)).0;
        let (name, op_name) = match (op, source.is_some()) {
            (Membership::Join, false) => (libc::MCAST_JOIN_GROUP, "setsockopt(MCAST_JOIN_GROUP)"),
            (Membership::Leave, false) => (libc::MCAST_LEAVE_GROUP, "setsockopt(MCAST_LEAVE_GROUP)"),
            (Membership::Join, true) => {
                (libc::MCAST_JOIN_SOURCE_GROUP, "setsockopt(MCAST_JOIN_SOURCE_GROUP)")
            }
            (Membership::Leave, true) => {
                (libc::MCAST_LEAVE_SOURCE_GROUP, "setsockopt(MCAST_LEAVE_SOURCE_GROUP)")
            }
            (Membership::Block, _) => (libc::MCAST_BLOCK_SOURCE, "setsockopt(MCAST_BLOCK_SOURCE)"),
            (Membership::Unblock, _) => (libc::MCAST_UNBLOCK_SOURCE, "setsockopt(MCAST_UNBLOCK_SOURCE)"),
        };
        let fd = self.fd.as_raw_fd();
        match source {
            None if matches!(op, Membership::Join | Membership::Leave) => {
                let request = libc::group_req { gr_interface: index, gr_group: storage(group) };
                // SAFETY: a live fd and a group_req of the size given.
                check(op_name, unsafe {
                    libc::setsockopt(
                        fd,
                        level,
                        name,
                        (&request as *const libc::group_req).cast(),
                        mem::size_of::<libc::group_req>() as libc::socklen_t,
                    )
                })
            }
            None => Err(Error::InvalidArgument("blocking needs a source".into())),
            Some(source) => {
                let request = libc::group_source_req {
                    gsr_interface: index,
                    gsr_group: storage(group),
                    gsr_source: storage(source),
                };
                // SAFETY: a live fd and a group_source_req of the size given.
                check(op_name, unsafe {
                    libc::setsockopt(
                        fd,
                        level,
                        name,
                        (&request as *const libc::group_source_req).cast(),
                        mem::size_of::<libc::group_source_req>() as libc::socklen_t,
                    )
                })
            }
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// An IPv4-mapped IPv6 address as the IPv4 one (what the JDK reports).
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// A connected socket's reads and writes: one datagram each.
impl ByteStream for DatagramSocket {
    fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        Ok(self.try_send_to(data, None)?.unwrap_or(0))
    }

    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome> {
        Ok(match self.try_receive_from(out)? {
            Some((n, _)) => ReadOutcome::Data(n),
            None => ReadOutcome::WouldBlock,
        })
    }

    fn available(&mut self) -> Result<usize> {
        sys::bytes_readable(self.fd.as_raw_fd())
    }

    fn wait(&mut self, interest: Interest, deadline: Deadline) -> Result<()> {
        let events = match interest {
            Interest::Read => libc::POLLIN,
            Interest::Write => libc::POLLOUT,
        };
        sys::wait_for("udp", [(self.fd.as_raw_fd(), events)], deadline)?;
        Ok(())
    }

    fn shutdown_output(&mut self) -> Result<()> {
        Err(Error::InvalidArgument("a datagram socket has no output to shut down".into()))
    }

    /// Nothing now: the fd closes when the stream drops, once no selector
    /// holds the socket (as the JDK defers the close of a registered channel).
    fn close(&mut self) {}

    fn ready(&mut self, interest: u32) -> Result<u32> {
        let unknown = |known: Option<bool>, op: u32| known.is_none() && interest & op != 0;
        if unknown(self.readable, ops::READ) || unknown(self.writable, ops::WRITE) {
            let mut poll_fd =
                libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN | libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd; a zero timeout never blocks.
            if unsafe { libc::poll(&mut poll_fd, 1, 0) } < 0 {
                return Err(Error::last_os("poll(udp)"));
            }
            // An error (an ICMP answer) is read as one.
            self.readable = Some(poll_fd.revents & (libc::POLLIN | libc::POLLERR) != 0);
            self.writable = Some(poll_fd.revents & (libc::POLLOUT | libc::POLLERR) != 0);
        }
        self.known_ready(interest)
    }

    fn known_ready(&mut self, interest: u32) -> Result<u32> {
        let mut ready = 0;
        if self.readable == Some(true) {
            ready |= ops::READ;
        }
        if self.writable == Some(true) {
            ready |= ops::WRITE;
        }
        Ok(ready & interest)
    }

    fn arm(&mut self, _interest: u32) -> Result<()> {
        Ok(()) // the kernel socket signals by itself
    }

    fn disarm(&mut self) -> Result<()> {
        Ok(())
    }

    fn signals_by_itself(&self) -> bool {
        true
    }

    fn signalled(&mut self, fd: RawFd, events: u32) {
        if fd != self.fd.as_raw_fd() {
            return;
        }
        let error = libc::EPOLLERR as u32;
        if events & (libc::EPOLLIN as u32 | error) != 0 {
            self.readable = Some(true);
        }
        if events & (libc::EPOLLOUT as u32 | error) != 0 {
            self.writable = Some(true);
        }
    }

    fn sources(&self, interest: u32) -> [WaitSource; 2] {
        let mut events = 0;
        if interest & ops::READ != 0 {
            events |= libc::POLLIN;
        }
        if interest & ops::WRITE != 0 {
            events |= libc::POLLOUT;
        }
        [(self.fd.as_raw_fd(), events), (-1, 0)]
    }

    fn datagram(&mut self) -> Option<&mut DatagramSocket> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(ipv6: bool) -> (DatagramSocket, SocketAddr) {
        let mut socket = DatagramSocket::open(ipv6).unwrap();
        let addr = socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        (socket, addr)
    }

    #[test]
    fn datagrams_cross_with_their_sender_and_a_full_buffer_truncates() {
        let (mut a, a_addr) = loopback(true);
        let (mut b, b_addr) = loopback(false);
        assert_eq!(a_addr.ip(), "127.0.0.1".parse::<IpAddr>().unwrap(), "a mapped address reads as IPv4");
        assert_eq!(b.try_receive_from(&mut [0; 8]).unwrap(), None);
        assert_eq!(b.ready(ops::READ).unwrap(), 0);
        assert_eq!(a.try_send_to(b"hello world", Some(b_addr)).unwrap(), Some(11));
        sys::wait_readable(
            "test",
            [b.fd.as_raw_fd()],
            Deadline::after(Some(std::time::Duration::from_secs(10))),
        )
        .unwrap();
        let mut out = [0u8; 5];
        assert_eq!(b.try_receive_from(&mut out).unwrap(), Some((5, a_addr)));
        assert_eq!(&out, b"hello");
        assert_eq!(b.try_receive_from(&mut out).unwrap(), None, "the rest of the datagram is gone");
    }

    /// As the JDK's: bound to the wildcard address and any port, connected
    /// and disconnected, a socket is on the wildcard address and its port again
    /// (Linux unbinds the port, and the address the connect chose stayed).
    #[test]
    fn a_disconnect_restores_the_address_bound_before_the_connect() {
        let (_, peer) = loopback(false);
        for ipv6 in [false, true] {
            let mut socket = DatagramSocket::open(ipv6).unwrap();
            let bound = socket.bind("0.0.0.0:0".parse().unwrap()).unwrap();
            assert_eq!(socket.connect(peer).unwrap(), SocketAddr::new(peer.ip(), bound.port()));
            assert_eq!(socket.disconnect().unwrap(), bound, "ipv6={ipv6}");
        }
    }

    #[test]
    fn connecting_drops_what_came_before_and_filters_senders() {
        let (mut a, a_addr) = loopback(false);
        let (mut b, b_addr) = loopback(false);
        let (mut c, _) = loopback(false);
        a.try_send_to(b"early", Some(b_addr)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        b.connect(a_addr).unwrap();
        c.try_send_to(b"stranger", Some(b_addr)).unwrap();
        a.try_send_to(b"late", Some(b_addr)).unwrap();
        sys::wait_readable(
            "test",
            [b.fd.as_raw_fd()],
            Deadline::after(Some(std::time::Duration::from_secs(10))),
        )
        .unwrap();
        let mut out = [0u8; 16];
        assert_eq!(b.try_read(&mut out).unwrap(), ReadOutcome::Data(4));
        assert_eq!(&out[..4], b"late");
        assert_eq!(b.disconnect().unwrap(), b_addr, "the port is kept");
    }

    #[test]
    fn a_connected_socket_learns_that_nobody_listens() {
        let (mut a, _) = loopback(false);
        let (gone, gone_addr) = loopback(false);
        drop(gone);
        a.connect(gone_addr).unwrap();
        a.try_write(b"anyone?").unwrap();
        sys::wait_readable(
            "test",
            [a.fd.as_raw_fd()],
            Deadline::after(Some(std::time::Duration::from_secs(10))),
        )
        .unwrap();
        let err = a.try_read(&mut [0; 8]).unwrap_err();
        assert!(matches!(err, Error::PortUnreachable), "{err}");
    }

    #[test]
    fn options_read_back_and_ipv6_options_reach_ipv6_sockets() {
        for ipv6 in [false, true] {
            let mut socket = DatagramSocket::open(ipv6).unwrap();
            for (option, value) in [
                (DatagramOption::Broadcast, 1),
                (DatagramOption::MulticastTtl, 7),
                (DatagramOption::TrafficClass, 0x10),
            ] {
                socket.set_option(option, value).unwrap();
                assert_eq!(socket.option(option).unwrap(), value, "{option:?} ipv6={ipv6}");
            }
        }
    }
}
