//! Entry points of the fuzz targets (`native/fuzz`, built with `--cfg
//! fuzzing`), also replayed over their checked-in corpora by the unit tests:
//! each hands bytes a peer controls to one parser of the engine and checks
//! what must hold whatever the bytes are. A panic is a finding (libFuzzer
//! stops and saves the input); a protocol violation reported is not.
//!
//! A script is the input after the bytes a parser starts from: steps of
//! [`STEP`] bytes, an operation and its argument, so that the fuzzer mixes
//! the peer's moves (publishing, crediting, rewriting memory it shares) with
//! ours (reading, writing, looking).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::Error;
use crate::media::ring::{RingConfig, RingReader, RingWriter};
use crate::media::send_stream::{self, Admitted, Ledger};
use crate::media::shm::{ShmFds, ShmStream, SEALS};
use crate::media::stream::{ops, ByteStream};
use crate::rdma::hello::{Hello, SlotGrant};
use crate::sys;

/// Bytes of a script step: the operation, then a little-endian argument.
pub const STEP: usize = 5;

/// The steps of `script`: an operation byte and a 32-bit argument each.
fn steps(script: &[u8]) -> impl Iterator<Item = (u8, u32)> + '_ {
    script.chunks(STEP).map(|step| {
        let mut arg = [0u8; 4];
        arg[..step.len() - 1].copy_from_slice(&step[1..]);
        (step[0], u32::from_le_bytes(arg))
    })
}

/// Ring records and credits (`ring`): the first 256 bytes are the ring the
/// peer wrote; the script publishes tails (whole and as the wire's low 31
/// bits), rewrites ring bytes after publishing, reads, counts what is
/// available, and credits a writer. Checks: a read returns no more than asked
/// and at least what `available` promised; the head never passes the tail.
pub fn ring_records(data: &[u8]) {
    const CAPACITY: usize = 256;
    let config = RingConfig::new(CAPACITY, 64, 0x5eed).expect("a valid ring shape");
    let (memory, script) = data.split_at(data.len().min(CAPACITY));
    let mut ring = [0u8; CAPACITY];
    ring[..memory.len()].copy_from_slice(memory);
    let mut reader = RingReader::new(config);
    let mut writer = RingWriter::new(config);
    let mut writer_sound = true;
    let mut out = [0u8; 2 * CAPACITY];
    for (op, arg) in steps(script) {
        let read = match op % 8 {
            0 => reader.publish(reader.tail() + u64::from(arg % (2 * CAPACITY as u32))).map(|()| 0),
            1 => reader.publish_low31(arg).map(|()| 0),
            2 => {
                let want = arg as usize % out.len();
                reader
                    .read(&ring[..], &mut out[..want])
                    .inspect(|&n| assert!(n <= want, "read {n} of {want}"))
            }
            3 => reader.available(&ring[..]).and_then(|promised| {
                let n = reader.read(&ring[..], &mut out)?;
                assert!(n >= promised, "available said {promised}, a read got {n}");
                Ok(n)
            }),
            4 => {
                ring[(arg >> 8) as usize % CAPACITY] = arg as u8;
                Ok(0)
            }
            5 => {
                reader.credit_due();
                reader.take_ack();
                Ok(0)
            }
            6 if writer_sound => {
                let len = arg as usize % 100;
                writer.write(&out[..len], arg, |_, _| {});
                Ok(0)
            }
            _ if writer_sound => {
                writer_sound =
                    if op & 8 == 0 { writer.credit(u64::from(arg)) } else { writer.credit_low31(arg) }
                        .is_ok();
                Ok(0)
            }
            _ => Ok(0),
        };
        if read.is_err() {
            return; // a violation ends the connection: the reader is not used again
        }
        assert!(reader.head() <= reader.tail(), "head {} past tail {}", reader.head(), reader.tail());
    }
}

/// Two-sided messages and their credit reports (`send_stream`): a stream
/// that granted 4 data and 3 control credits of 256-byte slots and was
/// granted as many. Each step of 17 bytes is a peer's message (a 16-byte
/// header, whose unused last word picks the message's length) or one of our
/// moves: a data or control message sent on credit, a data message read.
/// Checks: what is admitted never exceeds the credits we granted, nor what
/// we send the peer's.
pub fn send_messages(data: &[u8]) {
    let grant = SlotGrant { slot_len: 256, data_credits: 4, control_credits: 3 };
    let mut ledger = Ledger::new(grant, grant);
    let mut unread = 0u32;
    for step in data.chunks(1 + send_stream::HEADER_LEN) {
        let (op, message) = (step[0], &step[1..]);
        match op % 4 {
            0 => {
                let length_word =
                    message.get(12..16).map_or(0, |w| u32::from_le_bytes(w.try_into().unwrap()));
                let byte_len = length_word as usize % (grant.slot_len as usize + 1);
                match ledger.admit(message, byte_len) {
                    Ok(Admitted::Data(len)) => {
                        assert!(len as usize + send_stream::HEADER_LEN == byte_len && len > 0);
                        unread += 1;
                    }
                    Ok(Admitted::Control | Admitted::End | Admitted::Closed(_)) => {}
                    Err(_) => return, // a violation ends the connection
                }
            }
            1 if ledger.credit_for(false, 0) => ledger.sent(send_stream::KIND_DATA),
            2 if ledger.credit_for(true, 0) => ledger.sent(send_stream::KIND_CONTROL),
            3 if unread > 0 => {
                unread -= 1;
                ledger.consumed_data();
            }
            _ => {}
        }
        let (admitted, sent) = ledger.outstanding();
        assert_eq!(admitted, unread, "admitted data messages not read");
        assert!(admitted <= u32::from(grant.data_credits), "{admitted} data messages beyond our grant");
        assert!(sent <= u32::from(grant.data_credits), "{sent} data messages sent beyond the peer's grant");
    }
}

/// The connection hello (`rdma::hello`), as a connect request or reply
/// carries it, and the checks its grants then pass. Checks: what decodes
/// encodes to a hello that decodes the same.
pub fn hello(data: &[u8]) {
    let Ok(hello) = Hello::decode(data) else { return };
    assert_eq!(Hello::decode(&hello.encode()).expect("an encoded hello decodes"), hello);
    let grant = hello.grant;
    let _ = RingConfig::new(grant.capacity as usize, grant.max_payload as usize, grant.seed);
    let _ = crate::media::send_stream::check_grant(&hello.slots);
}

/// The shm region (`shm`): the first 4096 bytes are its header and control
/// words as the creating peer left them (magic, version, ring shape, tails,
/// heads, sleep announcements, closed flags); its rings follow, zeroed. We
/// open side 1; the script writes the peer's words and ring bytes between our
/// reads, writes, looks and half close. Nothing may panic, and the stream
/// stops at its first failure, as a socket does.
pub fn shm_region(data: &[u8]) {
    const CONTROL: usize = 4096;
    let (header, script) = data.split_at(data.len().min(CONTROL));
    let capacity = header.get(8..12).map_or(0, |word| u32::from_le_bytes(word.try_into().unwrap())) as usize;
    // A shape the header may disagree with: the open must refuse it.
    let ring_len =
        if capacity.is_power_of_two() && (128..=4096).contains(&capacity) { capacity } else { 4096 };
    let len = CONTROL + 2 * ring_len;
    let Ok(region) = memfd(len, header) else { return };
    // The peer's ends of the doorbells stay open (a write end opens only while its pipe has a reader).
    let (Ok(ours), Ok((_peer_side, peer_doorbell)), Ok((doorbell, _peer_rings))) =
        (region.try_clone(), sys::pipe(), sys::pipe())
    else {
        return;
    };
    let fds = ShmFds { region: OwnedFd::from(ours), doorbells: [peer_doorbell, doorbell] };
    let Ok(mut stream) = ShmStream::open(fds, 1) else { return };
    let mut buffer = [0u8; 8192];
    for (op, arg) in steps(script) {
        let outcome = match op % 8 {
            // The peer (side 0) writes a word of the control area: its tail,
            // head, sleep or closed word (offsets 64, 128, 192, 256), or any.
            0 => poke(&region, [64, 128, 192, 256][usize::from(op >> 3) % 4], &u64::from(arg).to_le_bytes()),
            1 => poke(&region, (arg >> 8) as usize % len, &[arg as u8]),
            2 => poke(&region, CONTROL + (arg as usize % ring_len), &arg.to_le_bytes()),
            3 => stream.try_read(&mut buffer[..arg as usize % 8192]).map(|_| ()),
            4 => stream.try_write(&buffer[..arg as usize % 8192]).map(|_| ()),
            5 => stream.ready(ops::READ | ops::WRITE).map(|_| ()),
            6 => stream.available().map(|_| ()),
            _ => stream.shutdown_output(),
        };
        match outcome {
            Ok(()) | Err(Error::Disconnected) => {}
            Err(Error::InvalidArgument(why)) if why.contains("after shutdown_output") => {}
            Err(_) => return,
        }
    }
    stream.close();
}

/// A memfd of `len` bytes starting with `start`, sealed as a peer's region is.
fn memfd(len: usize, start: &[u8]) -> std::io::Result<std::fs::File> {
    // SAFETY: a static NUL-terminated name; a new fd or -1.
    let fd =
        unsafe { libc::memfd_create(c"rdma-nio-fuzz".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd is new and ours.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(len as u64)?;
    std::os::unix::fs::FileExt::write_all_at(&file, start, 0)?;
    // SAFETY: fcntl on the memfd we own; no memory is passed.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// The peer writes `bytes` at `at` in the shared region (through the page cache it shares with our mapping).
fn poke(region: &std::fs::File, at: usize, bytes: &[u8]) -> crate::Result<()> {
    // A write past the end is cut short: nothing the stream can see.
    let _ = std::os::unix::fs::FileExt::write_all_at(region, bytes, at as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input of a target's corpus (`native/fuzz/corpus/TARGET`), findings included.
    fn replay(target: &str, run: fn(&[u8])) {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let inputs: Vec<_> = std::fs::read_dir(&folder)
            .unwrap_or_else(|err| panic!("{}: {err}", folder.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        assert!(!inputs.is_empty(), "{} holds no inputs", folder.display());
        for input in inputs {
            run(&std::fs::read(&input).unwrap());
        }
    }

    #[test]
    fn the_ring_corpus_replays() {
        replay("ring_records", super::ring_records);
    }

    #[test]
    fn the_hello_corpus_replays() {
        replay("hello", super::hello);
    }

    #[test]
    fn the_send_messages_corpus_replays() {
        replay("send_messages", super::send_messages);
    }

    #[test]
    fn the_shm_region_corpus_replays() {
        replay("shm_region", super::shm_region);
    }
}
