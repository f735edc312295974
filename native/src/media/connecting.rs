//! A stream connect that never waits: each medium's setup is a state machine
//! that a look (`Connect::advance`) moves on, without blocking, once the fd
//! of its step (`Connect::source`) has something: a kernel TCP connect's
//! socket, room in the shm listener's backlog, rdma_cm's address, route and connect
//! events. A selector watches that fd with the socket's others, so a
//! connect takes no thread of its own, as a non-blocking connect on the
//! JDK's provider takes none; a blocking connect waits for the same fd.
//!
//! `auto` goes on to the next medium when one does not reach the peer, and
//! a ring connect goes on to two-sided sends when the listener grants only
//! those: the step's fd then changes (`advance` says so).

use std::mem;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::media::rdma_stream::{RdmaStream, RingsConnecting};
use crate::media::send_stream::{SendStream, SendsConnecting};
use crate::media::shm_listener::ShmHandover;
use crate::media::tcp::TcpByteStream;
use crate::media::transport::{self, Medium, Stream, Transport, TransportOptions};
use crate::rdma::cm::EventChannel;
use crate::rdma::completions::GroupOffer;
use crate::rdma::endpoint::Resolving;
use crate::sys::port::{self, ReservedPort};
use crate::sys::{self, Deadline};

/// A connect under way (see the module documentation).
pub(crate) struct Connect {
    addr: SocketAddr,
    options: TransportOptions,
    timeout: Option<Duration>,
    deadline: Deadline,
    /// A client's bind: TCP connects from its very socket, shm from its
    /// address, RDMA from its port (which the endpoint then holds too).
    /// Dropped once connected (a TCP connection's socket is then the
    /// stream's alone).
    from: Option<Arc<ReservedPort>>,
    /// The completion group an RDMA queue pair joins when it is made.
    offer: GroupOffer,
    /// `auto`: TCP when RDMA does not reach the peer.
    tcp_after_rdma: bool,
    step: Step,
    /// Every rdma_cm channel a step watched, held while the connect lives:
    /// a selector may watch a channel's fd until it looks again, and the
    /// number must not go to another file meanwhile.
    channels: Vec<Arc<EventChannel>>,
}

enum Step {
    /// A kernel TCP connect: its socket becomes writable when done.
    Tcp(Option<OwnedFd>),
    Shm(ShmHandover),
    /// rdma_cm resolves the address and route, for a ring stream or a
    /// two-sided one (`rings` false).
    Resolving {
        resolving: Resolving,
        rings: bool,
    },
    Rings(RingsConnecting),
    Sends(SendsConnecting),
    Done,
}

impl Connect {
    /// Starts connecting to `addr` over `transport`: what fails at once
    /// (a refused shm or loopback TCP connect, an address no medium
    /// reaches) fails here, as the medium's blocking connect would.
    pub(crate) fn start(
        addr: SocketAddr,
        transport: Transport,
        options: TransportOptions,
        timeout: Option<Duration>,
        offer: GroupOffer,
        from: Option<Arc<ReservedPort>>,
    ) -> Result<Connect> {
        let mut connect = Connect {
            addr,
            options,
            timeout,
            deadline: Deadline::after(timeout),
            from,
            offer,
            tcp_after_rdma: false,
            step: Step::Done,
            channels: Vec::new(),
        };
        connect.step = match transport {
            Transport::Tcp => connect.start_tcp()?,
            Transport::Rdma => connect.start_rdma(true)?,
            Transport::Shm if !transport::is_local(addr.ip()) => return Err(Error::NotLocal(addr)),
            Transport::Shm => connect.start_shm()?,
            Transport::Auto => {
                let shm = match transport::is_local(addr.ip()) {
                    true => connect.start_shm(),
                    false => Err(Error::ConnectionRefused(addr)),
                };
                match shm {
                    // No rdma-nio listener here: maybe plain TCP.
                    Err(Error::ConnectionRefused(_)) => connect.start_past_shm()?,
                    started => started?,
                }
            }
        };
        Ok(connect)
    }

    /// The fd whose readiness (`libc::POLLIN` or `POLLOUT`, as given) moves
    /// the connect on; -1 once it is done.
    pub(crate) fn source(&self) -> (RawFd, libc::c_short) {
        match &self.step {
            Step::Tcp(socket) => (socket.as_ref().map_or(-1, AsRawFd::as_raw_fd), libc::POLLOUT),
            Step::Shm(handover) => (handover.fd(), libc::POLLOUT),
            Step::Resolving { resolving, .. } => (resolving.event_fd(), libc::POLLIN),
            Step::Rings(connecting) => (connecting.event_fd(), libc::POLLIN),
            Step::Sends(connecting) => (connecting.event_fd(), libc::POLLIN),
            Step::Done => (-1, 0),
        }
    }

    /// The deadline the connect fails at (a blocking connect's wait ends there).
    pub(crate) fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Takes the steps that can be taken without waiting: the connection
    /// once made, `None` while it is under way (`source` may then be another
    /// fd than before: a selector must watch the new one).
    ///
    /// # Errors
    /// Why the connection cannot be made (`TimedOut` past the deadline); the
    /// connect is over then.
    pub(crate) fn advance(&mut self) -> Result<Option<(Medium, Stream)>> {
        loop {
            let before = self.source();
            let made = match self.take_step() {
                Err(err) => self.fall_back(err).map(|()| None),
                made => made,
            };
            match made {
                Ok(Some(made)) => {
                    self.from = None;
                    return Ok(Some(made));
                }
                // A new step may have its answer already (a refused TCP connect).
                Ok(None) if self.source() != before => continue,
                Ok(None) => return Ok(None),
                Err(err) => {
                    self.from = None;
                    return Err(err);
                }
            }
        }
    }

    /// Waits for the connection (a blocking connect).
    pub(crate) fn finish_blocking(mut self) -> Result<(Medium, Stream)> {
        loop {
            if let Some(made) = self.advance()? {
                return Ok(made);
            }
            match sys::wait_for("connect", [self.source()], self.deadline) {
                Ok(_) | Err(Error::TimedOut { .. }) => {} // the next look says which
                Err(err) => return Err(err),
            }
        }
    }

    fn take_step(&mut self) -> Result<Option<(Medium, Stream)>> {
        match &mut self.step {
            Step::Tcp(_) => self.tcp_outcome(),
            Step::Shm(handover) => {
                Ok(handover.try_finish()?.map(|stream| (Medium::Shm, Box::new(stream) as Stream)))
            }
            Step::Resolving { resolving, rings } => {
                let Some(endpoint) = resolving.advance(&self.offer)? else { return Ok(None) };
                // The resolving step goes once the request is out: its channel is the endpoint's now.
                self.step = match *rings {
                    true => Step::Rings(RdmaStream::start_connect(endpoint, self.options.rdma)?),
                    false => Step::Sends(SendStream::start_connect(endpoint, self.options.sends)?),
                };
                Ok(None)
            }
            Step::Rings(connecting) => {
                let Some(reply) = connecting.connected()? else { return Ok(None) };
                let Step::Rings(connecting) = mem::replace(&mut self.step, Step::Done) else {
                    unreachable!()
                };
                Ok(Some((Medium::Rdma, Box::new(connecting.finish(reply)?))))
            }
            Step::Sends(connecting) => {
                let Some(reply) = connecting.connected()? else { return Ok(None) };
                let Step::Sends(connecting) = mem::replace(&mut self.step, Step::Done) else {
                    unreachable!()
                };
                Ok(Some((Medium::RdmaSends, Box::new(connecting.finish(reply)?))))
            }
            Step::Done => Err(Error::InvalidArgument("the connect is over".into())),
        }
    }

    /// After a step failed with `err`: the next medium or path, if there is one for it.
    fn fall_back(&mut self, err: Error) -> Result<()> {
        let rdma = matches!(self.step, Step::Resolving { .. } | Step::Rings(_) | Step::Sends(_));
        let sends_instead = matches!((&err, &self.step), (Error::SendsOnly(_), Step::Rings(_)));
        let tcp_instead = rdma
            && self.tcp_after_rdma
            && matches!(err, Error::NoDevice(_) | Error::Unreachable { .. } | Error::ConnectionRefused(_));
        if !sends_instead && !tcp_instead {
            return Err(err); // the step stays: its fds live as long as the connect
        }
        // The attempt goes before the next starts: its identifier holds the
        // bound address's RDMA port, which the next one takes (its channel's
        // fd stays in `channels`).
        self.step = Step::Done;
        self.step = if sends_instead {
            log::debug!("{} grants two-sided sends only", self.addr);
            self.start_rdma(false)?
        } else {
            log::debug!("auto transport to {}: no RDMA ({err}), using TCP", self.addr);
            self.start_tcp()?
        };
        Ok(())
    }

    /// `auto` where shm does not reach the peer: RDMA when the host has a
    /// device (TCP if it does not reach the peer), else TCP.
    fn start_past_shm(&mut self) -> Result<Step> {
        if !transport::host_has_rdma() {
            return self.start_tcp();
        }
        self.tcp_after_rdma = true;
        match self.start_rdma(true) {
            Err(err @ (Error::NoDevice(_) | Error::Unreachable { .. })) => {
                log::debug!("auto transport to {}: no RDMA ({err}), using TCP", self.addr);
                self.start_tcp()
            }
            started => started,
        }
    }

    fn start_tcp(&mut self) -> Result<Step> {
        port::start_tcp_connect(self.from.as_deref(), self.addr)
            .map(|socket| Step::Tcp(Some(socket)))
            .map_err(|source| transport::tcp_connect_error(self.addr, self.timeout, source))
    }

    fn start_shm(&mut self) -> Result<Step> {
        let from = self.from.as_deref().map(ReservedPort::addr);
        ShmHandover::start(self.addr, from, self.options.shm, self.deadline).map(Step::Shm)
    }

    /// Resolves the peer for a ring stream, or for a two-sided one.
    fn start_rdma(&mut self, rings: bool) -> Result<Step> {
        let from = self.from.clone();
        let resolving = match rings {
            true => RdmaStream::resolve(from, self.addr, self.deadline)?,
            false => SendStream::resolve(from, self.addr, &self.options.sends, self.deadline)?,
        };
        self.channels.push(resolving.channel());
        Ok(Step::Resolving { resolving, rings })
    }

    /// A TCP connect's outcome, if its socket is writable (a look: poll(2)
    /// without waiting).
    fn tcp_outcome(&mut self) -> Result<Option<(Medium, Stream)>> {
        let Step::Tcp(Some(socket)) = &self.step else {
            return Err(Error::InvalidArgument("the connect was taken".into()));
        };
        let done = match sys::wait_for(
            "tcp connect",
            [(socket.as_raw_fd(), libc::POLLOUT)],
            Deadline::after(Some(Duration::ZERO)),
        ) {
            Ok(_) => true,
            Err(Error::TimedOut { .. }) => false,
            Err(err) => return Err(err),
        };
        if !done {
            return match self.deadline.expired() {
                true => Err(Error::TimedOut { op: "tcp connect", timeout: self.timeout.unwrap_or_default() }),
                false => Ok(None),
            };
        }
        port::connect_outcome(socket)
            .map_err(|source| transport::tcp_connect_error(self.addr, self.timeout, source))?;
        let Step::Tcp(socket) = &mut self.step else { unreachable!() };
        let stream = TcpByteStream::new(TcpStream::from(socket.take().expect("looked at above")))?;
        Ok(Some((Medium::Tcp, Box::new(stream))))
    }
}
