//! The byte-stream face every medium shows (`shm::ShmStream`,
//! `rdma_stream::RdmaStream`): ordered and lossless like a TCP socket, with
//! partial reads and writes. Non-blocking calls report "would block"; the
//! blocking ones are built once here from them and the medium's own wait.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys::Deadline;

/// What a non-blocking read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were read (never 0).
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The peer closed and everything it wrote was read.
    EndOfStream,
}

/// What a waiting caller needs the stream to be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Read a byte, or learn of end of stream.
    Read,
    /// Write a byte, or learn that the peer closed.
    Write,
}

/// A byte stream to one peer.
pub trait ByteStream {
    /// Writes as much of `data` as there is room for; 0 means it would block.
    ///
    /// # Errors
    /// `Disconnected` once the peer has closed; a protocol violation by the
    /// peer; a failure of the medium.
    fn try_write(&mut self, data: &[u8]) -> Result<usize>;

    /// Reads what has arrived, up to `out.len()` bytes.
    ///
    /// # Errors
    /// A protocol violation by the peer; a failure of the medium.
    fn try_read(&mut self, out: &mut [u8]) -> Result<ReadOutcome>;

    /// Sleeps until `interest` can make progress (it may wake early: callers
    /// retry), or fails with `TimedOut` at the deadline.
    fn wait(&mut self, interest: Interest, deadline: Deadline) -> Result<()>;

    /// Writes all of `data`, waiting for room as needed.
    fn write_all(&mut self, mut data: &[u8], timeout: Option<Duration>) -> Result<()> {
        let deadline = Deadline::after(timeout);
        while !data.is_empty() {
            let n = self.try_write(data)?;
            data = &data[n..];
            if n == 0 {
                self.wait(Interest::Write, deadline)?;
            }
        }
        Ok(())
    }

    /// Fills `out` completely, waiting as needed.
    ///
    /// # Errors
    /// `Disconnected` when the stream ends first.
    fn read_exact(&mut self, mut out: &mut [u8], timeout: Option<Duration>) -> Result<()> {
        let deadline = Deadline::after(timeout);
        while !out.is_empty() {
            match self.try_read(out)? {
                ReadOutcome::Data(n) => out = &mut out[n..],
                ReadOutcome::EndOfStream => return Err(Error::Disconnected),
                ReadOutcome::WouldBlock => self.wait(Interest::Read, deadline)?,
            }
        }
        Ok(())
    }

    /// Reads at least one byte, waiting while there is none; `Ok(0)` is end of stream.
    fn read(&mut self, out: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        let deadline = Deadline::after(timeout);
        loop {
            match self.try_read(out)? {
                ReadOutcome::Data(n) => return Ok(n),
                ReadOutcome::EndOfStream => return Ok(0),
                ReadOutcome::WouldBlock => self.wait(Interest::Read, deadline)?,
            }
        }
    }
}
