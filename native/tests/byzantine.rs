//! A Byzantine peer against the one-sided path. The attacker is written here
//! with raw verbs and rdma_cm, nothing of the engine's connection code: it
//! connects to a listener the way an rdma-nio peer does, takes the ring grant
//! (address, rkey, seed) from the accept, and then uses that rkey as an attacker
//! would. The victim is an ordinary `RdmaStream`. Runs in the Soft-RoCE VM (see
//! `tests/vm`); on the host each test checks that the engine reports no device.
//!
//! What `docs/threat-model.md` promises, each checked here: a write outside the
//! granted ring is refused by the device and ends the connection; a record with
//! a bad length, a bad check, a replayed or a skipped sequence number is refused
//! with an error naming the rule, the connection ends and its rkey is dead at
//! once; other connections keep working; an rkey of an earlier connection opens
//! nothing.

mod common;

use std::ffi::CString;
use std::net::SocketAddr;
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};

use common::test_addr;
use rdma_sys::*;
use rdmanio::media::ring::{RingConfig, RingWriter, HEADER_LEN};
use rdmanio::{
    connect, ByteStream, Error, Listener, Medium, RdmaStream, ReadOutcome, RingPeers, StreamListener,
    StreamOptions, Transport, TransportOptions,
};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
const OPTIONS: StreamOptions = StreamOptions { ring_capacity: 16 * 1024, max_record: 4 * 1024 };
/// `rdma_cma.h`'s option level and name for the ACK timeout (rdma-sys binds no option names).
const RDMA_OPTION_ID: i32 = 0;
const RDMA_OPTION_ID_ACK_TIMEOUT: i32 = 3;
/// Bytes of the credit slot after each ring (`rdma_stream`'s layout).
const SLOT_LEN: u64 = 64;

fn no_device_here() -> bool {
    if test_addr().is_some() {
        return false;
    }
    match Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 1) {
        Err(Error::NoDevice(_)) => true,
        Err(err) => panic!("expected a no-device error, got: {err}"),
        Ok(_) => panic!("an RDMA device exists: set RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR to test on it"),
    }
}

/// What the victim granted its peer in the accept's private data (the hello of
/// `rdma/hello.rs`: magic, version, kind, then the grant's fields).
#[derive(Debug, Clone, Copy)]
struct Grant {
    addr: u64,
    rkey: u32,
    capacity: u32,
    max_payload: u32,
    seed: u32,
}

impl Grant {
    fn ring(&self) -> RingConfig {
        RingConfig::new(self.capacity as usize, self.max_payload as usize, self.seed).expect("a valid grant")
    }
}

/// An attacker: one RC queue pair, connected by hand, that writes whatever it likes.
struct RawPeer {
    id: *mut rdma_cm_id,
    /// The ring it grants the victim in its own hello (it must look genuine).
    own: *mut ibv_mr,
    _own_buf: Box<[u8]>,
    /// Where its writes come from.
    out: *mut ibv_mr,
    out_buf: Box<[u8]>,
    victim: Grant,
}

const PEER_RECEIVES: u32 = 16;

// SAFETY: libibverbs and librdmacm objects may be used from any thread; the
// peer is built on one thread and then used by one at a time.
unsafe impl Send for RawPeer {}

/// The data path an attacker asks for in its hello.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// One-sided: it grants a ring and gets one.
    Rings,
    /// Two-sided: it grants receive slots (`SLOT` bytes, 4 data and 3 control credits).
    Sends,
}

/// Bytes of the attacker's receive slots on the two-sided path.
const SLOT: usize = 1024;

impl RawPeer {
    fn connect(addr: SocketAddr, path: Path) -> RawPeer {
        RawPeer::try_connect(addr, path).unwrap_or_else(|err| panic!("rdma_connect: {err}"))
    }

    /// Connects, or says why the listener refused.
    fn try_connect(addr: SocketAddr, path: Path) -> Result<RawPeer, std::io::Error> {
        let host = CString::new(addr.ip().to_string()).unwrap();
        let port = CString::new(addr.port().to_string()).unwrap();
        // SAFETY (whole function): plain librdmacm/libibverbs calls on objects
        // created here and checked before use; buffers outlive their registrations.
        unsafe {
            let mut hints: rdma_addrinfo = std::mem::zeroed();
            hints.ai_port_space = rdma_port_space::RDMA_PS_TCP as i32;
            let mut info = ptr::null_mut();
            assert_eq!(
                rdma_getaddrinfo(host.as_ptr(), port.as_ptr(), &hints, &mut info),
                0,
                "rdma_getaddrinfo"
            );
            let mut attr: ibv_qp_init_attr = std::mem::zeroed();
            attr.cap.max_send_wr = 16;
            attr.cap.max_recv_wr = PEER_RECEIVES;
            attr.cap.max_send_sge = 1;
            attr.cap.max_recv_sge = 1;
            attr.qp_type = ibv_qp_type::IBV_QPT_RC;
            let mut id = ptr::null_mut();
            assert_eq!(rdma_create_ep(&mut id, info, ptr::null_mut(), &mut attr), 0, "rdma_create_ep");
            rdma_freeaddrinfo(info);
            // Writes into a dead connection fail after retries; keep them short.
            let ack_timeout: u8 = 14; // 4.096 us << 14: 67 ms
            let set = rdma_set_option(
                id,
                RDMA_OPTION_ID,
                RDMA_OPTION_ID_ACK_TIMEOUT,
                (&ack_timeout as *const u8).cast_mut().cast(),
                1,
            );
            assert_eq!(set, 0, "rdma_set_option");

            let ring_len = 16 * 1024;
            let mut own_buf = vec![0u8; ring_len + SLOT_LEN as usize].into_boxed_slice();
            let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
            let own = ibv_reg_mr((*id).pd, own_buf.as_mut_ptr().cast(), own_buf.len(), access.0 as i32);
            assert!(!own.is_null(), "ibv_reg_mr");
            let mut out_buf = vec![0u8; 64 * 1024].into_boxed_slice();
            let out = ibv_reg_mr((*id).pd, out_buf.as_mut_ptr().cast(), out_buf.len(), 0);
            assert!(!out.is_null(), "ibv_reg_mr");
            // Receives into slots of its ring's memory (the two-sided path sends into them).
            for slot in 0..PEER_RECEIVES as usize {
                let mut sge = ibv_sge {
                    addr: own_buf.as_ptr() as u64 + (slot * SLOT) as u64,
                    length: SLOT as u32,
                    lkey: (*own).lkey,
                };
                let mut wr = ibv_recv_wr { wr_id: 0, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
                let mut bad = ptr::null_mut();
                assert_eq!(ibv_post_recv((*id).qp, &mut wr, &mut bad), 0, "ibv_post_recv");
            }

            // The hello of `rdma/hello.rs`: magic, version, path, ring grant, slot grant.
            let mut hello = [0u8; 44];
            hello[0..4].copy_from_slice(b"rnio");
            hello[4] = 2;
            match path {
                Path::Rings => {
                    hello[5] = 2;
                    hello[8..16].copy_from_slice(&(own_buf.as_ptr() as u64).to_le_bytes());
                    let fields = [(*own).rkey, ring_len as u32, 4096, 7, PEER_RECEIVES];
                    for (i, field) in fields.iter().enumerate() {
                        hello[16 + i * 4..20 + i * 4].copy_from_slice(&field.to_le_bytes());
                    }
                }
                Path::Sends => {
                    hello[5] = 3;
                    hello[36..40].copy_from_slice(&(SLOT as u32).to_le_bytes());
                    hello[40..42].copy_from_slice(&4u16.to_le_bytes());
                    hello[42..44].copy_from_slice(&3u16.to_le_bytes());
                }
            }
            let mut param: rdma_conn_param = std::mem::zeroed();
            param.private_data = hello.as_ptr().cast();
            param.private_data_len = hello.len() as u8;
            param.responder_resources = 1;
            param.initiator_depth = 1;
            param.retry_count = 1;
            param.rnr_retry_count = 0;
            if rdma_connect(id, &mut param) != 0 {
                let err = std::io::Error::last_os_error();
                ibv_dereg_mr(own);
                ibv_dereg_mr(out);
                rdma_destroy_ep(id);
                return Err(err);
            }
            let event = (*id).event;
            assert!(!event.is_null(), "no established event");
            let conn = (*event).param.conn;
            assert!(conn.private_data_len as usize >= 44, "the accept carries no grant");
            let reply = std::slice::from_raw_parts(conn.private_data.cast::<u8>(), 44);
            assert_eq!(reply[5], hello[5], "the listener answered on another path");
            let u32_at = |at: usize| u32::from_le_bytes(reply[at..at + 4].try_into().unwrap());
            let victim = Grant {
                addr: u64::from_le_bytes(reply[8..16].try_into().unwrap()),
                rkey: u32_at(16),
                capacity: u32_at(20),
                max_payload: u32_at(24),
                seed: u32_at(28),
            };
            Ok(RawPeer { id, own, _own_buf: own_buf, out, out_buf, victim })
        }
    }

    /// RDMA-writes `bytes` to `remote_addr` under `rkey` (with immediate data
    /// if `imm`) and returns the completion's status.
    fn write_to(
        &mut self,
        remote_addr: u64,
        rkey: u32,
        bytes: &[u8],
        imm: Option<u32>,
    ) -> ibv_wc_status::Type {
        self.out_buf[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: the QP and the source registration are live; wr and sge
        // outlive the post; the completion is awaited before returning.
        unsafe {
            let mut sge = ibv_sge {
                addr: self.out_buf.as_ptr() as u64,
                length: bytes.len() as u32,
                lkey: (*self.out).lkey,
            };
            let mut wr: ibv_send_wr = std::mem::zeroed();
            wr.sg_list = &mut sge;
            wr.num_sge = 1;
            wr.opcode = match imm {
                Some(imm) => {
                    wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
                    ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
                }
                None => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            };
            wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
            wr.wr.rdma = rdma_t { remote_addr, rkey };
            self.post_and_wait(&mut wr)
        }
    }

    /// SENDs `bytes` as one message and returns the completion's status.
    fn send(&mut self, bytes: &[u8]) -> ibv_wc_status::Type {
        self.out_buf[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: as in `write_to`.
        unsafe {
            let mut sge = ibv_sge {
                addr: self.out_buf.as_ptr() as u64,
                length: bytes.len() as u32,
                lkey: (*self.out).lkey,
            };
            let mut wr: ibv_send_wr = std::mem::zeroed();
            wr.sg_list = &mut sge;
            wr.num_sge = 1;
            wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
            wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
            self.post_and_wait(&mut wr)
        }
    }

    /// Posts `wr` and waits for its completion.
    ///
    /// # Safety
    /// `wr` and its scatter list must be valid, in registered memory.
    unsafe fn post_and_wait(&mut self, wr: &mut ibv_send_wr) -> ibv_wc_status::Type {
        let mut bad = ptr::null_mut();
        if ibv_post_send((*self.id).qp, wr, &mut bad) != 0 {
            // The queue pair already left RTS: as good as refused.
            return ibv_wc_status::IBV_WC_WR_FLUSH_ERR;
        }
        let mut wc: ibv_wc = std::mem::zeroed();
        let started = Instant::now();
        loop {
            match ibv_poll_cq((*self.id).send_cq, 1, &mut wc) {
                1 => return wc.status,
                0 => assert!(started.elapsed() < Duration::from_secs(30), "no completion"),
                n => panic!("ibv_poll_cq: {n}"),
            }
            thread::sleep(Duration::from_micros(100));
        }
    }

    /// Writes into the victim's ring at `offset`, under the granted rkey.
    fn write_ring(&mut self, offset: usize, bytes: &[u8], imm: Option<u32>) -> ibv_wc_status::Type {
        let (addr, rkey) = (self.victim.addr + offset as u64, self.victim.rkey);
        self.write_to(addr, rkey, bytes, imm)
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        // SAFETY: the objects were created in `connect` and are destroyed once.
        unsafe {
            rdma_disconnect(self.id);
            ibv_dereg_mr(self.own);
            ibv_dereg_mr(self.out);
            rdma_destroy_ep(self.id);
        }
    }
}

fn status_text(status: ibv_wc_status::Type) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for any value.
    unsafe { std::ffi::CStr::from_ptr(ibv_wc_status_str(status)) }.to_string_lossy().into_owned()
}

/// The attacker connected to a fresh stream accepted by `listener`: (attacker, victim).
fn attack(listener: &Listener) -> (RawPeer, RdmaStream) {
    let addr = listener.local_addr();
    let attacker = thread::spawn(move || RawPeer::connect(addr, Path::Rings));
    let victim = listener.accept_stream(OPTIONS, TIMEOUT).expect("accept");
    (attacker.join().expect("attacker thread"), victim)
}

/// An honest pair through `listener`: proves that connection still carries bytes.
fn assert_honest_connection_works(listener: &Listener) {
    let addr = listener.local_addr();
    let client = thread::spawn(move || RdmaStream::connect(addr, OPTIONS, TIMEOUT).expect("connect"));
    let mut server = listener.accept_stream(OPTIONS, TIMEOUT).expect("accept");
    let mut client = client.join().expect("client thread");
    client.write_all(b"still fine", TIMEOUT).expect("honest write");
    let mut got = [0u8; 10];
    server.read_exact(&mut got, TIMEOUT).expect("honest read");
    assert_eq!(&got, b"still fine");
}

/// Reads until the victim's stream ends one way or the other; panics on data.
fn read_until_torn_down(victim: &mut RdmaStream) -> Result<(), Error> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match victim.try_read(&mut buf)? {
            ReadOutcome::EndOfStream => return Ok(()),
            ReadOutcome::WouldBlock => {
                assert!(started.elapsed() < Duration::from_secs(30), "the victim's connection stayed up");
                thread::sleep(Duration::from_millis(1));
            }
            ReadOutcome::Data(n) => panic!("the victim read {n} bytes the attacker forged"),
        }
    }
}

#[test]
fn a_write_outside_the_granted_ring_is_refused_by_the_device() {
    if no_device_here() {
        return;
    }
    let listener = Listener::bind(SocketAddr::new(test_addr().unwrap(), 0), 8).expect("bind");
    let (mut attacker, mut victim) = attack(&listener);
    let region_end = attacker.victim.capacity as usize + SLOT_LEN as usize;
    // Inside the grant the key works (so a refusal below is the bounds' doing)...
    let inside = attacker.write_ring(region_end - 8, &[0; 8], None);
    assert_eq!(inside, ibv_wc_status::IBV_WC_SUCCESS, "a write inside the grant: {}", status_text(inside));
    // ...one byte past its end it does not.
    let outside = attacker.write_ring(region_end - 7, &[0xAA; 8], None);
    assert_eq!(
        outside,
        ibv_wc_status::IBV_WC_REM_ACCESS_ERR,
        "a write past the grant completed with {}",
        status_text(outside)
    );
    // The device moved the victim's queue pair to the error state: the stream ends.
    let ended = read_until_torn_down(&mut victim);
    eprintln!("victim after the refused write: {ended:?}");
    drop(victim);
    assert_honest_connection_works(&listener);
}

/// The ways a record can lie, and the rule the victim must name for each.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// A length beyond the record limit (everything else right).
    Length,
    /// A payload byte changed after the check was computed.
    Check,
    /// The first record again, at the next position.
    Replay,
    /// The third record at the second one's position.
    Skip,
}

impl Forgery {
    const ALL: [Forgery; 4] = [Forgery::Length, Forgery::Check, Forgery::Replay, Forgery::Skip];

    fn expected_rule(self) -> &'static str {
        match self {
            Forgery::Length => "exceeds the limit",
            Forgery::Check => "check",
            Forgery::Replay | Forgery::Skip => "sequence number",
        }
    }
}

/// One record as the ring expects it: `(offset in the ring, header + payload, tail after)`.
fn record(writer: &mut RingWriter, payload: &[u8]) -> (usize, Vec<u8>, u64) {
    let frame = writer.frame(payload, 0).expect("room in an empty ring");
    assert!(frame.padding.is_none(), "no wrap in these few records");
    let mut bytes = frame.header.to_vec();
    bytes.extend_from_slice(payload);
    bytes.resize(bytes.len().next_multiple_of(8), 0);
    (frame.offset, bytes, frame.tail)
}

/// The immediate data that publishes `tail` (its low 31 bits).
fn publish(tail: u64) -> Option<u32> {
    Some(tail as u32 & !(1 << 31))
}

#[test]
fn forged_records_end_the_connection_and_revoke_its_rkey() {
    if no_device_here() {
        return;
    }
    let listener = Listener::bind(SocketAddr::new(test_addr().unwrap(), 0), 8).expect("bind");
    for forgery in Forgery::ALL {
        let (mut attacker, mut victim) = attack(&listener);
        let mut writer = RingWriter::new(attacker.victim.ring());
        let (first_at, first, first_tail) = record(&mut writer, b"genuine");
        let (second_at, mut second, second_tail) = record(&mut writer, b"forged!");
        let (_, third, _) = record(&mut writer, b"skipped");

        // A genuine record first: the attacker speaks the protocol well enough.
        assert_eq!(attacker.write_ring(first_at, &first, publish(first_tail)), ibv_wc_status::IBV_WC_SUCCESS);
        let mut buf = [0u8; 64];
        victim.read_exact(&mut buf[..7], TIMEOUT).expect("the genuine record");
        assert_eq!(&buf[..7], b"genuine");

        match forgery {
            Forgery::Length => {
                let too_long = attacker.victim.max_payload + 8;
                second[0..4].copy_from_slice(&too_long.to_le_bytes());
            }
            Forgery::Check => second[HEADER_LEN] ^= 1,
            Forgery::Replay => second = first.clone(),
            Forgery::Skip => second = third.clone(),
        }
        let sent = attacker.write_ring(second_at, &second, publish(second_tail));
        assert_eq!(sent, ibv_wc_status::IBV_WC_SUCCESS, "{forgery:?}: the forged write itself lands");

        let started = Instant::now();
        let err = loop {
            match victim.try_read(&mut buf) {
                Ok(ReadOutcome::WouldBlock) if started.elapsed() < Duration::from_secs(30) => {
                    thread::sleep(Duration::from_millis(1))
                }
                Ok(outcome) => panic!("{forgery:?}: the victim read {outcome:?}"),
                Err(err) => break err,
            }
        };
        let text = err.to_string();
        assert!(matches!(err, Error::Violation(_)), "{forgery:?}: {text}");
        assert!(text.contains(forgery.expected_rule()), "{forgery:?}: {text}");
        eprintln!("{forgery:?}: {text}");

        // The rkey died with the violation: the next write does not land.
        let after = attacker.write_ring(second_at, &first, None);
        assert_ne!(after, ibv_wc_status::IBV_WC_SUCCESS, "{forgery:?}: a write after the violation landed");
        let later = victim.try_read(&mut buf);
        assert!(
            !matches!(later, Ok(ReadOutcome::Data(_) | ReadOutcome::WouldBlock)),
            "{forgery:?}: {later:?}"
        );
        drop(victim);
        drop(attacker);
        assert_honest_connection_works(&listener);
    }
}

#[test]
fn an_rkey_of_an_earlier_connection_opens_nothing() {
    if no_device_here() {
        return;
    }
    let listener = Listener::bind(SocketAddr::new(test_addr().unwrap(), 0), 8).expect("bind");
    let (mut first, first_victim) = attack(&listener);
    let old = first.victim;
    assert_eq!(
        first.write_ring(0, &[1; 8], None),
        ibv_wc_status::IBV_WC_SUCCESS,
        "the key worked while connected"
    );
    drop(first_victim);
    drop(first);

    // rxe draws 8 random bits of each new key: the new grant may reuse the old
    // value (then the "old" key is simply the new grant). Connect again until not.
    let (mut second, mut second_victim) = loop {
        let (peer, victim) = attack(&listener);
        if peer.victim.rkey != old.rkey {
            break (peer, victim);
        }
    };
    assert_eq!(second.write_ring(0, &[2; 8], None), ibv_wc_status::IBV_WC_SUCCESS, "the new grant works");
    let reused = second.write_to(old.addr, old.rkey, &[3; 8], None);
    assert_eq!(
        reused,
        ibv_wc_status::IBV_WC_REM_ACCESS_ERR,
        "a write under the earlier connection's rkey completed with {}",
        status_text(reused)
    );
    read_until_torn_down(&mut second_victim).ok();
    drop(second_victim);
    assert_honest_connection_works(&listener);
}

/// A two-sided message as `send_stream.rs` frames it: kind (1 data, 2 credit
/// update, 3 end), data and control messages consumed, zero; then the bytes.
fn message(kind: u32, data_consumed: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + payload.len());
    for word in [kind, data_consumed, 0, 0] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

/// The ways a two-sided client can break the protocol, and the rule the listener names.
#[derive(Debug, Clone, Copy)]
enum BadMessage {
    /// More data messages than its credits allow (it never waits for a credit update).
    BeyondCredits,
    /// A kind that does not exist.
    UnknownKind,
    /// A credit update that carries bytes.
    ControlWithBytes,
    /// A claim to have consumed messages the listener never sent.
    ImpossibleCredit,
    /// Fewer bytes than a header.
    Short,
}

impl BadMessage {
    const ALL: [BadMessage; 5] = [
        BadMessage::BeyondCredits,
        BadMessage::UnknownKind,
        BadMessage::ControlWithBytes,
        BadMessage::ImpossibleCredit,
        BadMessage::Short,
    ];

    /// What the attacker sends after one genuine message, and the rule broken.
    fn messages(self) -> (Vec<Vec<u8>>, &'static str) {
        match self {
            // 4 data credits: the genuine message and three more fit, the fifth does not.
            BadMessage::BeyondCredits => (vec![message(1, 0, b"more"); 4], "beyond the granted credits"),
            BadMessage::UnknownKind => (vec![message(9, 0, b"")], "unknown kind"),
            BadMessage::ControlWithBytes => (vec![message(2, 0, b"bytes")], "control message with bytes"),
            BadMessage::ImpossibleCredit => (vec![message(1, 5, b"x")], "consumed 5 data"),
            BadMessage::Short => (vec![vec![1, 0, 0, 0, 0, 0, 0, 0]], "shorter than a header"),
        }
    }
}

#[test]
fn a_client_gets_no_rkey_and_one_that_breaks_the_two_sided_protocol_is_cut_off() {
    if no_device_here() {
        return;
    }
    // A listener whose ring peers are nobody: every client is two-sided.
    let options = TransportOptions { ring_peers: RingPeers::Only(Vec::new()), ..Default::default() };
    let listener =
        StreamListener::bind(SocketAddr::new(test_addr().unwrap(), 0), Transport::Rdma, options.clone())
            .expect("bind");
    let addr = listener.local_addr();
    for bad in BadMessage::ALL {
        let attacker = thread::spawn(move || {
            let refused = RawPeer::try_connect(addr, Path::Rings);
            assert!(refused.is_err(), "{bad:?}: a client was granted a ring");
            RawPeer::connect(addr, Path::Sends)
        });
        let (medium, mut victim) = listener.accept(TIMEOUT).expect("accept");
        let mut attacker = attacker.join().expect("attacker thread");
        assert_eq!(medium, Medium::RdmaSends);
        assert_eq!(attacker.victim.rkey, 0, "{bad:?}: the two-sided accept carried an rkey");

        assert_eq!(attacker.send(&message(1, 0, b"genuine")), ibv_wc_status::IBV_WC_SUCCESS);
        let mut buf = [0u8; 64];
        victim.read_exact(&mut buf[..7], TIMEOUT).expect("the genuine message");
        assert_eq!(&buf[..7], b"genuine");
        let (messages, rule) = bad.messages();
        for bytes in &messages {
            assert_eq!(attacker.send(bytes), ibv_wc_status::IBV_WC_SUCCESS, "{bad:?}: the send itself lands");
        }
        let started = Instant::now();
        let err = loop {
            match victim.try_read(&mut buf) {
                Ok(ReadOutcome::EndOfStream) => panic!("{bad:?}: end of stream instead of an error"),
                Ok(_) if started.elapsed() < Duration::from_secs(30) => {
                    thread::sleep(Duration::from_millis(1))
                }
                Ok(outcome) => panic!("{bad:?}: still {outcome:?} after 30 s"),
                Err(err) => break err,
            }
        };
        let text = err.to_string();
        assert!(matches!(err, Error::Violation(_)), "{bad:?}: {text}");
        assert!(text.contains(rule), "{bad:?}: {text}");
        eprintln!("{bad:?}: {text}");
        let after = attacker.send(&message(1, 0, b"after"));
        assert_ne!(after, ibv_wc_status::IBV_WC_SUCCESS, "{bad:?}: a send after the violation landed");
        drop(victim);
        drop(attacker);

        // An honest client of the same listener is served as before.
        let honest_options = options.clone();
        let client = thread::spawn(move || connect(addr, Transport::Rdma, &honest_options, TIMEOUT));
        let (_, mut server) = listener.accept(TIMEOUT).expect("honest accept");
        let (medium, mut client) = client.join().expect("client thread").expect("honest connect");
        assert_eq!(medium, Medium::RdmaSends);
        client.write_all(b"still fine", TIMEOUT).expect("honest write");
        let mut got = [0u8; 10];
        server.read_exact(&mut got, TIMEOUT).expect("honest read");
        assert_eq!(&got, b"still fine");
    }
}
