//! Random bytes from the kernel, for ring check seeds and port choices.

use crate::error::{Error, Result};

/// Fills `buf` from getrandom(2).
pub(crate) fn fill(buf: &mut [u8]) -> Result<()> {
    // SAFETY: getrandom writes at most `buf.len()` bytes into the live buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(Error::last_os("getrandom"));
    }
    Ok(())
}
