//! A link taken down under connections across the Soft-RoCE VM's wire (rxe0
//! and rxe1 on the two ends of a veth pair, tests/vm/wire): it must fail every
//! one of them, on both devices, promptly: no reader waits forever for bytes
//! that cannot come. On the host (no device) the test checks nothing and says
//! so; in the VM the wire must be there.
//!
//! One link flap per VM boot: after a flap under live connections this
//! kernel's rxe0 receives nothing more (rping fails too), so tests/vm/link-down
//! boots a VM for this test alone.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rdmanio::{ByteStream, Stream};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
/// How soon a connection must fail once its link is down: the port event
/// comes within milliseconds; this leaves room for emulation.
const FAILS_WITHIN: Duration = Duration::from_secs(5);

/// Takes the wire's link down; brings it back up when dropped, whatever the
/// test's outcome, and waits until the RDMA ports on both ends are active.
struct LinkDown<'a>(&'a str);

impl<'a> LinkDown<'a> {
    fn new(script: &'a str) -> Self {
        common::run_wire(script, "down");
        LinkDown(script)
    }
}

impl Drop for LinkDown<'_> {
    fn drop(&mut self) {
        common::run_wire(self.0, "up");
    }
}

/// Each end answers the other once: the pair works before the link goes.
fn exchange(a: &mut Stream, b: &mut Stream) {
    let mut got = [0u8; 4];
    a.write_all(b"ping", TIMEOUT).expect("write");
    b.read_exact(&mut got, TIMEOUT).expect("read");
    b.write_all(b"pong", TIMEOUT).expect("write");
    a.read_exact(&mut got, TIMEOUT).expect("read");
    assert_eq!(&got, b"pong");
}

/// Idle readers on every end of ring and two-sided connections across the
/// wire: taking the link down fails each read (a port-down event on both
/// devices; an idle reader has nothing posted that a retry could fail),
/// with an error that names it, within `FAILS_WITHIN`.
#[test]
fn a_link_that_goes_down_fails_every_connection_on_it() {
    let Some((far, script)) = common::wire() else { return };
    let (mut ring_client, mut ring_server) = common::wire_ring_pair(far);
    let (mut sends_client, mut sends_server) = common::wire_sends_pair(far);
    for client in [&ring_client, &sends_client] {
        let near = client.local_addr().expect("a local address").ip();
        assert_ne!(near, far, "the connection does not cross the wire (its route is gone?)");
    }
    exchange(&mut ring_client, &mut ring_server);
    exchange(&mut sends_client, &mut sends_server);

    let (ended, each_end) = mpsc::channel();
    let ends = [
        ("ring client", ring_client),
        ("ring server", ring_server),
        ("sends client (own receive queue)", sends_client),
        ("sends server (shared receive queue)", sends_server),
    ];
    let count = ends.len();
    let (started, reading) = mpsc::channel();
    for (name, mut stream) in ends {
        let (ended, started) = (ended.clone(), started.clone());
        thread::spawn(move || {
            started.send(()).unwrap();
            let mut buf = [0u8; 64];
            let outcome = stream.read(&mut buf, TIMEOUT);
            ended.send((name, Instant::now(), outcome.map_err(|err| err.to_string()))).unwrap();
            stream // kept open until the outcome is sent
        });
    }
    (0..count).for_each(|_| reading.recv().unwrap());
    thread::sleep(Duration::from_millis(200)); // each reader is past its spin, asleep

    let link = LinkDown::new(&script);
    let down = Instant::now(); // a reader may fail before the script returns: 0 ms
    let mut failures = Vec::new();
    for _ in 0..count {
        let (name, at, outcome) = each_end.recv().expect("a reader's outcome");
        let after = at - down;
        println!("{name}: {outcome:?} {:.0} ms after the link went down", after.as_secs_f64() * 1e3);
        match outcome {
            Err(err) if err.contains("went down") && after <= FAILS_WITHIN => {}
            other => failures.push(format!("{name}: {other:?} after {after:?}")),
        }
    }
    drop(link);
    assert!(
        failures.is_empty(),
        "expected each read to fail with the port down within {FAILS_WITHIN:?}: {failures:#?}"
    );
}
