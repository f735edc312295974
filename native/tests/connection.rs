//! Connections over a real verbs device. The Soft-RoCE VM harness
//! (tests/vm/run-in-vm) sets RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR; there
//! every test must pass over that device. Without them (a host with no RDMA),
//! each test checks instead that the operation fails with a clear "no RDMA
//! device" error, which is the normal case on such a host.

use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::Duration;

use rdmanio::{device_names, Connection, Error, Listener, MAX_MESSAGE_SIZE};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

/// The device and address the harness configured, if any.
fn test_device() -> Option<(String, IpAddr)> {
    let device = std::env::var("RDMANIO_TEST_DEVICE").ok()?;
    let addr =
        std::env::var("RDMANIO_TEST_ADDR").expect("RDMANIO_TEST_DEVICE is set without RDMANIO_TEST_ADDR");
    Some((device, addr.parse().expect("RDMANIO_TEST_ADDR is not an IP address")))
}

fn assert_no_device<T>(result: Result<T, Error>) {
    match result {
        Err(err @ Error::NoDevice(_)) => {
            assert!(err.to_string().starts_with("no RDMA device: "), "{err}");
            eprintln!("host without RDMA, as expected: {err}");
        }
        Err(err) => panic!("expected a no-device error, got: {err}"),
        Ok(_) => panic!("an RDMA device exists: set RDMANIO_TEST_DEVICE and RDMANIO_TEST_ADDR to test on it"),
    }
}

/// A listener on the test address and a server thread that echoes every
/// message until end of stream, then returns how many it echoed.
fn echo_server(ip: IpAddr, expected_device: String) -> (SocketAddr, thread::JoinHandle<usize>) {
    let listener = Listener::bind(SocketAddr::new(ip, 0), 8).expect("bind");
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0, "the listener reports the port it was given");
    let server = thread::spawn(move || {
        let mut conn = listener.accept(TIMEOUT).expect("accept");
        assert_eq!(conn.device_name(), expected_device);
        println!("server: device {}, qp {}, peer {}", conn.device_name(), conn.qp_num(), conn.peer_addr());
        let mut buf = vec![0u8; MAX_MESSAGE_SIZE];
        let mut echoed = 0;
        while let Some(len) = conn.recv(&mut buf, TIMEOUT).expect("server receive") {
            conn.send(&buf[..len], TIMEOUT).expect("server send");
            echoed += 1;
        }
        echoed
    });
    (addr, server)
}

#[test]
fn the_device_list_matches_the_environment() {
    match test_device() {
        Some((device, _)) => {
            let names = device_names().expect("device list");
            assert!(names.contains(&device), "{device} not in {names:?}");
        }
        None => assert_no_device(device_names()),
    }
}

/// A process with no fd left is told so, not that the host has no RDMA:
/// libibverbs reports ENOSYS for both (an RDMA benchmark with 1,000
/// connections under the VM's fd limit of 1,024 was told "this kernel has no
/// RDMA support"). The test runs itself again in a child process, which uses
/// up its fds.
#[test]
fn a_process_out_of_fds_is_told_so_not_that_rdma_is_missing() {
    const CHILD: &str = "RDMANIO_TEST_OUT_OF_FDS";
    const NAME: &str = "a_process_out_of_fds_is_told_so_not_that_rdma_is_missing";
    if std::env::var_os(CHILD).is_some() {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a valid rlimit to fill, then to set.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        limit.rlim_cur = limit.rlim_cur.min(256);
        // SAFETY: the limit just read, lowered.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let mut held = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            held.push(file);
        }
        let err = device_names().expect_err("a device list with no fd left");
        assert_eq!(err.errno(), Some(libc::EMFILE), "{err}");
        return;
    }
    // Its output stays here: its "test result" line would count a test twice.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs again");
    let said = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "the child process failed ({}): {said}", child.status);
}

#[test]
fn messages_are_echoed_intact_over_rdma() {
    echo_round_trips(Duration::ZERO);
}

#[test]
fn messages_are_echoed_intact_with_busy_polling() {
    echo_round_trips(Duration::from_micros(200));
}

fn echo_round_trips(busy_poll: Duration) {
    let Some((device, ip)) = test_device() else {
        return assert_no_device(Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 8));
    };
    let (addr, server) = echo_server(ip, device.clone());
    let mut client = Connection::connect(addr, TIMEOUT).expect("connect");
    client.set_busy_poll(busy_poll);
    // Across the VM's wire (tests/vm/netem) the client is on the other device.
    let client_device = std::env::var("RDMANIO_TEST_CLIENT_DEVICE").unwrap_or(device);
    assert_eq!(client.device_name(), client_device);
    assert_eq!(client.peer_addr(), addr);
    println!(
        "client: device {}, qp {}, local {}",
        client.device_name(),
        client.qp_num(),
        client.local_addr()
    );

    // Every size class: empty, inline-sized, one byte short of and exactly the maximum.
    let sizes = [0, 1, 7, 63, 64, 65, 1000, MAX_MESSAGE_SIZE - 1, MAX_MESSAGE_SIZE];
    let mut reply = vec![0u8; MAX_MESSAGE_SIZE];
    let rounds = 200;
    for round in 0..rounds {
        let len = sizes[round % sizes.len()];
        let message: Vec<u8> = (0..len).map(|i| (i * 31 + round * 7) as u8).collect();
        client.send(&message, TIMEOUT).expect("client send");
        let got =
            client.recv(&mut reply, TIMEOUT).expect("client receive").expect("a reply, not end of stream");
        assert_eq!(&reply[..got], &message[..], "round {round}, {len} bytes");
    }
    drop(client); // the server sees end of stream
    assert_eq!(server.join().expect("server thread"), rounds);
}

#[test]
fn connecting_where_nothing_listens_is_refused() {
    let Some((_, ip)) = test_device() else {
        return assert_no_device(Connection::connect(SocketAddr::from(([127, 0, 0, 1], 9)), TIMEOUT));
    };
    // A port that was just free: bind, learn it, close.
    let port = Listener::bind(SocketAddr::new(ip, 0), 1).expect("bind").local_addr().port();
    match Connection::connect(SocketAddr::new(ip, port), TIMEOUT) {
        Err(Error::ConnectionRefused(addr)) => assert_eq!(addr, SocketAddr::new(ip, port)),
        Err(err) => panic!("expected a refusal, got: {err}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[test]
fn oversized_messages_are_refused_and_nothing_is_lost() {
    let Some((device, ip)) = test_device() else {
        return assert_no_device(Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 8));
    };
    let (addr, server) = echo_server(ip, device);
    let mut client = Connection::connect(addr, TIMEOUT).expect("connect");

    let too_big = vec![1u8; MAX_MESSAGE_SIZE + 1];
    match client.send(&too_big, TIMEOUT) {
        Err(Error::MessageTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_MESSAGE_SIZE + 1, MAX_MESSAGE_SIZE))
        }
        other => panic!("expected MessageTooLarge, got {:?}", other.map(|_| ())),
    }

    client.send(b"twelve bytes", TIMEOUT).expect("send");
    let mut small = [0u8; 5];
    match client.recv(&mut small, TIMEOUT) {
        Err(Error::MessageTooLarge { len: 12, max: 5 }) => {}
        other => panic!("expected MessageTooLarge for a 5-byte buffer, got {other:?}"),
    }
    let mut enough = [0u8; 12];
    assert_eq!(client.recv(&mut enough, TIMEOUT).expect("receive"), Some(12), "the message stayed queued");
    assert_eq!(&enough, b"twelve bytes");

    drop(client);
    assert_eq!(server.join().expect("server thread"), 1);
}

#[test]
fn a_message_sent_just_before_close_arrives() {
    let Some((_, ip)) = test_device() else {
        return assert_no_device(Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 8));
    };
    let listener = Listener::bind(SocketAddr::new(ip, 0), 1).expect("bind");
    let addr = listener.local_addr();
    let server = thread::spawn(move || {
        let mut conn = listener.accept(TIMEOUT).expect("accept");
        let mut buf = [0u8; 64];
        let len =
            conn.recv(&mut buf, TIMEOUT).expect("receive").expect("the last message, not end of stream");
        assert_eq!(&buf[..len], b"last words");
        assert_eq!(conn.recv(&mut buf, TIMEOUT).expect("end"), None, "then end of stream");
    });
    let mut client = Connection::connect(addr, TIMEOUT).expect("connect");
    client.send(b"last words", TIMEOUT).expect("send");
    drop(client); // at once: the send may still be in flight
    server.join().expect("server thread");
}

#[test]
fn a_silent_peer_makes_receive_time_out() {
    let Some((_, ip)) = test_device() else {
        return assert_no_device(Connection::connect(SocketAddr::from(([127, 0, 0, 1], 9)), TIMEOUT));
    };
    let listener = Listener::bind(SocketAddr::new(ip, 0), 1).expect("bind");
    let addr = listener.local_addr();
    let server = thread::spawn(move || listener.accept(TIMEOUT).expect("accept"));
    let mut client = Connection::connect(addr, TIMEOUT).expect("connect");
    let _silent_server = server.join().expect("server thread");

    let mut buf = [0u8; 16];
    match client.recv(&mut buf, Some(Duration::from_millis(100))) {
        Err(Error::TimedOut { op: "receive", timeout }) => assert_eq!(timeout, Duration::from_millis(100)),
        other => panic!("expected a receive timeout, got {other:?}"),
    }
}
