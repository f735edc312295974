//! Passing fds between processes over a Unix socket (SCM_RIGHTS), each
//! message one byte with the fds attached. Neither call waits (`MSG_DONTWAIT`).

use std::io::IoSlice;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What `receive` took: the byte (none at end of stream or on a longer
/// message), every fd that came with it, whether more were cut off, and the
/// sender's abstract socket name (none for an unnamed sender or a connected stream).
pub(crate) struct Received {
    pub byte: Option<u8>,
    pub fds: Vec<OwnedFd>,
    pub truncated: bool,
    pub sender: Option<Vec<u8>>,
}

/// Sends `byte` with `fds` attached (`WouldBlock` when the receiver has no room).
pub(crate) fn send(socket: &impl AsRawFd, byte: u8, fds: &[RawFd]) -> std::io::Result<()> {
    let payload = [byte];
    let iov = [IoSlice::new(&payload)];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of_val(fds) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer has room for one header with the fds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of_val(fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
    }
    // SAFETY: msg describes live buffers.
    if unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) } != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one byte and up to `max_fds` fds (close-on-exec). Every fd that
/// arrives is owned before anything is judged, so none leaks on a refusal.
pub(crate) fn receive(socket: &impl AsRawFd, max_fds: usize) -> std::io::Result<Received> {
    let mut payload = [0u8; 1];
    let mut iov = [libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: 1 }];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((max_fds * mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut name: libc::sockaddr_un = unsafe { mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = mem::size_of_val(&name) as libc::socklen_t;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg describes live buffers; received fds are close-on-exec.
    let n =
        unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                fds.extend((0..count).map(|i| OwnedFd::from_raw_fd(data.add(i).read_unaligned())));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let byte = (n == 1).then_some(payload[0]);
    // An abstract name: a NUL, then the name's bytes up to the length given.
    let path_len = (msg.msg_namelen as usize).saturating_sub(mem::size_of::<libc::sa_family_t>());
    let sender = (path_len > 1 && name.sun_path[0] == 0)
        .then(|| name.sun_path[1..path_len.min(name.sun_path.len())].iter().map(|&c| c as u8).collect());
    Ok(Received { byte, fds, truncated: msg.msg_flags & libc::MSG_CTRUNC != 0, sender })
}
