//! Sockets and the poller (the native half of the Java selector and channels),
//! on every medium this machine has: TCP and shared memory on the host, and
//! RDMA too in the Soft-RoCE VM (RDMANIO_TEST_DEVICE set).

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Child;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdmanio::media::stream::ops;
use rdmanio::nio::poller::{PollMode, Poller};
use rdmanio::nio::socket::{status, Socket, Spin};
use rdmanio::{Transport, TransportOptions};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(20));

fn ip() -> IpAddr {
    std::env::var("RDMANIO_TEST_ADDR").map_or(IpAddr::from([127, 0, 0, 1]), |a| a.parse().unwrap())
}

fn transports() -> Vec<Transport> {
    let mut transports = vec![Transport::Tcp, Transport::Shm];
    if std::env::var_os("RDMANIO_TEST_DEVICE").is_some() {
        transports.push(Transport::Rdma);
    }
    transports
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((ip(), 0)).unwrap().local_addr().unwrap().port()
}

fn listen(transport: Transport) -> (Arc<Socket>, SocketAddr) {
    let socket =
        Socket::listen(SocketAddr::new(ip(), 0), transport, TransportOptions::default(), 8).expect("listen");
    let (addr, _) = socket.addresses().unwrap();
    (socket, addr)
}

/// A listener in slot 0 of a blocking poller.
fn selected_listener(transport: Transport) -> (Arc<Socket>, SocketAddr, Poller) {
    let (listener, addr) = listen(transport);
    let poller = Poller::new(PollMode::Blocking).unwrap();
    poller.register(0, Arc::clone(&listener)).unwrap();
    (listener, addr, poller)
}

/// Selects until `slot` reports `want` (other slots may report too); returns
/// its ops, or 0 when it did not within `TIMEOUT` (for the caller's assertion
/// to say which case failed).
fn select_for(poller: &Poller, interests: &[i32], slot: i32, want: u32) -> u32 {
    let mut ready = [0i32; 16];
    let deadline = Instant::now() + TIMEOUT.unwrap();
    while Instant::now() < deadline {
        let n = poller.select(interests, &mut ready, Some(Duration::from_secs(1))).expect("select");
        for pair in ready[..2 * n].chunks(2) {
            if pair[0] == slot && pair[1] as u32 & want != 0 {
                return pair[1] as u32;
            }
        }
    }
    0
}

#[test]
fn one_selector_sees_accept_connect_read_and_write() {
    for transport in transports() {
        let (listener, addr, poller) = selected_listener(transport);
        let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        poller.register(1, Arc::clone(&client)).unwrap();
        let mut interests = [ops::ACCEPT as i32, ops::CONNECT as i32, 0];

        assert_eq!(select_for(&poller, &interests, 1, ops::CONNECT), ops::CONNECT, "{transport:?}");
        assert!(client.finish_connect(false).unwrap());
        assert_eq!(select_for(&poller, &interests, 0, ops::ACCEPT), ops::ACCEPT);
        let server = listener.accept(false, None).unwrap().expect("an accepted connection");
        assert!(listener.accept(false, None).unwrap().is_none(), "one connection, one accept");
        poller.register(2, Arc::clone(&server)).unwrap();

        // The connect brought new fds: the poller must watch them from now on.
        interests = [0, ops::READ as i32, ops::READ as i32];
        let mut ready = [0i32; 8];
        assert_eq!(poller.select(&interests, &mut ready, Some(Duration::ZERO)).unwrap(), 0, "{transport:?}");
        assert_eq!(client.write(b"ping", false).unwrap(), 4);
        assert_eq!(select_for(&poller, &interests, 2, ops::READ), ops::READ);
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf, false, None).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(server.read(&mut buf, false, None).unwrap(), status::UNAVAILABLE);

        interests = [0, 0, ops::WRITE as i32];
        assert_eq!(select_for(&poller, &interests, 2, ops::WRITE), ops::WRITE);

        // Closing one end: the other reads end of stream, also through the selector.
        client.close();
        interests = [0, 0, ops::READ as i32];
        assert_eq!(select_for(&poller, &interests, 2, ops::READ), ops::READ, "{transport:?}");
        assert_eq!(server.read(&mut buf, true, TIMEOUT).unwrap(), status::EOF, "{transport:?}");
        poller.deregister(1);
        poller.deregister(2);
    }
}

/// A writer out of room sleeps in the selector until the reader's reading
/// makes room, although the reader stops calling the stream once it has read
/// what it wanted (it owes no more calls: a kernel socket makes room alone). A
/// round fills the connection and reads it empty; a wake-up lost to a credit
/// that landed just after the writer looked, or one the reader would only send
/// on a later call, fails a round (seen under netem, 1 run in 20, before every
/// credit write woke the writer).
#[test]
fn a_writer_out_of_room_becomes_writable_when_the_reader_reads() {
    const ROUNDS: usize = 4;
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        assert!(client.finish_connect(true).unwrap());
        let server = listener.accept(true, None).unwrap().unwrap();
        let poller = Poller::new(PollMode::Adaptive(Duration::from_micros(50))).unwrap();
        poller.register(0, Arc::clone(&client)).unwrap();

        let chunk = vec![7u8; 64 * 1024];
        for round in 0..ROUNDS {
            let mut sent = 0usize;
            loop {
                let n = client.write(&chunk, false).unwrap();
                sent += n;
                if n == 0 {
                    break;
                }
                assert!(sent < 64 << 20, "{transport:?}: 64 MiB went in without the reader reading");
            }
            let mut ready = [0i32; 4];
            if transport != Transport::Tcp {
                // (A kernel socket may find room again at once, as its buffers drain to the peer's.)
                let found = poller.select(&[ops::WRITE as i32], &mut ready, Some(Duration::ZERO)).unwrap();
                assert_eq!(found, 0, "{transport:?}: writable although a write took nothing");
            }
            let reader = Arc::clone(&server);
            let reader = thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut received = 0;
                while received < sent {
                    let n = reader.read(&mut buf, true, TIMEOUT).unwrap();
                    assert!(n > 0);
                    received += n as usize;
                    assert!(buf[..n as usize].iter().all(|&b| b == 7));
                }
            });
            let found = select_for(&poller, &[ops::WRITE as i32], 0, ops::WRITE);
            reader.join().unwrap();
            assert_eq!(
                found,
                ops::WRITE,
                "{transport:?}, round {round}: no room after the reader read everything"
            );
        }
        client.close();
    }
}

/// A connection to `addr`, made and accepted at once: (client, server).
fn connected_pair(listener: &Socket, addr: SocketAddr, transport: Transport) -> (Arc<Socket>, Arc<Socket>) {
    let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
    assert!(client.finish_connect(true).unwrap());
    let server = listener.accept(true, None).unwrap().expect("an accepted connection");
    (client, server)
}

/// A connect started without blocking writes the socket's kick for the
/// selectors that watch it, which read nothing (edge-triggered): the next
/// blocking read still sleeps once, not once for the kick and again (it woke
/// at once for the kick, and its second sleep made the connection's epoll set).
#[test]
fn a_blocking_read_after_a_connect_started_for_selectors_sleeps_once() {
    let (listener, addr) = listen(Transport::Shm);
    let client = Socket::connect(addr, Transport::Shm, TransportOptions::default(), TIMEOUT).unwrap();
    assert!(client.finish_connect(true).unwrap());
    let server = listener.accept(true, None).unwrap().expect("an accepted connection");
    let late = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        server.write(b"late", false).unwrap()
    });
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf, true, TIMEOUT).unwrap(), 4);
    assert_eq!(late.join().unwrap(), 4);
    assert_eq!(client.sleeps(), 1, "the read slept more than once for one message");
}

/// Many registered connections, one of them busy: once the poller armed the
/// idle ones, a select asks the busy one only, and an idle one that gets data
/// is still found (its fds signal).
#[test]
fn idle_sockets_are_armed_and_asked_again_only_when_they_signal() {
    const IDLE: usize = 16;
    const ROUNDS: u64 = 20;
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let pairs: Vec<_> = (0..=IDLE).map(|_| connected_pair(&listener, addr, transport)).collect();
        // Blocking mode arms a socket as soon as it is not ready.
        let poller = Poller::new(PollMode::Blocking).unwrap();
        for (slot, (_, server)) in pairs.iter().enumerate() {
            poller.register(slot, Arc::clone(server)).unwrap();
        }
        let interests = vec![ops::READ as i32; IDLE + 1];
        let mut ready = vec![0i32; 2 * (IDLE + 1)];
        let found = poller.select(&interests, &mut ready, Some(Duration::from_millis(10))).unwrap();
        assert_eq!(found, 0, "{transport:?}: nothing was sent yet");

        let (busy_client, busy_server) = &pairs[0];
        let asks_before = poller.asks();
        let mut buf = [0u8; 8];
        for _ in 0..ROUNDS {
            assert_eq!(busy_client.write(b"ping", true).unwrap(), 4);
            assert_eq!(select_for(&poller, &interests, 0, ops::READ), ops::READ);
            assert_eq!(busy_server.read(&mut buf, false, None).unwrap(), 4);
        }
        // Each round: the look that finds it, the look that does not, and the
        // arming's second look; all idle sockets asked once per select would be 17 each.
        let asks = poller.asks() - asks_before;
        assert!(asks <= 4 * ROUNDS, "{transport:?}: {asks} asks for {ROUNDS} rounds with one busy socket");

        let (idle_client, idle_server) = &pairs[IDLE];
        assert_eq!(idle_client.write(b"late", true).unwrap(), 4);
        assert_eq!(select_for(&poller, &interests, IDLE as i32, ops::READ), ops::READ, "{transport:?}");
        assert_eq!(idle_server.read(&mut buf, false, None).unwrap(), 4);
    }
}

/// While a busy socket keeps every select returning at its first look, an
/// armed socket's data is still reported soon: its signal is collected once
/// 200 us have passed since the last collect, not only on every 16th look
/// (16 selects of a selector busy with many connections take milliseconds).
#[test]
fn an_armed_socket_is_reported_while_a_busy_socket_keeps_the_selector_returning() {
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let (busy_client, busy_server) = connected_pair(&listener, addr, transport);
        let (idle_client, idle_server) = connected_pair(&listener, addr, transport);
        // Blocking mode arms a socket as soon as it is not ready; the busy one
        // stays ready (its data is never read), so no select sleeps.
        let poller = Poller::new(PollMode::Blocking).unwrap();
        poller.register(0, Arc::clone(&busy_server)).unwrap();
        poller.register(1, Arc::clone(&idle_server)).unwrap();
        assert_eq!(busy_client.write(b"busy", true).unwrap(), 4);
        let interests = [ops::READ as i32; 2];
        let mut ready = [0i32; 4];
        assert_eq!(select_for(&poller, &interests, 0, ops::READ), ops::READ, "{transport:?}");

        assert_eq!(idle_client.write(b"late", true).unwrap(), 4);
        thread::sleep(Duration::from_millis(20)); // landed, and longer than the interval
        let reported = (0..2).any(|_| {
            let found = poller.select(&interests, &mut ready, TIMEOUT).unwrap();
            ready[..2 * found].chunks(2).any(|pair| pair[0] == 1)
        });
        assert!(reported, "{transport:?}: the armed socket's data went unreported in two selects");
        let mut buf = [0u8; 8];
        assert_eq!(idle_server.read(&mut buf, false, None).unwrap(), 4);
        assert_eq!(busy_server.read(&mut buf, false, None).unwrap(), 4);
    }
}

/// A spinning selector with a quiet armed socket (a listener) beside a hot
/// one collects the armed one's signals about every 200 us, not on every 16th
/// of its looks, which take tens of nanoseconds while it spins: a
/// busy-polling ping-pong's server made an `epoll_wait` every other round
/// trip for its idle listener. It still sees the listener's news. Memory media only:
/// a kernel socket is armed at once, and a busy selector of armed sockets
/// alone can only spin on collecting.
#[test]
fn a_spinning_selector_collects_a_quiet_armed_socket_about_every_200_us() {
    const SPINS: u32 = 10;
    for transport in transports().into_iter().filter(|&transport| transport != Transport::Tcp) {
        let (listener, addr) = listen(transport);
        let (client, server) = connected_pair(&listener, addr, transport);
        let poller = Poller::new(PollMode::Busy).unwrap();
        poller.register(0, Arc::clone(&listener)).unwrap();
        poller.register(1, Arc::clone(&server)).unwrap();
        let interests = [ops::ACCEPT as i32, ops::READ as i32];
        let mut ready = [0i32; 4];
        let mut buf = [0u8; 8];
        let began = Instant::now();
        let collects_before = poller.collects();
        for _ in 0..SPINS {
            // Data keeps the connection hot (a busy selector arms it after 10 ms idle)...
            assert_eq!(client.write(b"ping", true).unwrap(), 4);
            assert_eq!(select_for(&poller, &interests, 1, ops::READ), ops::READ, "{transport:?}");
            assert_eq!(server.read(&mut buf, false, None).unwrap(), 4);
            // ...and a select that finds nothing spins 2 ms on it.
            assert_eq!(poller.select(&interests, &mut ready, Some(Duration::from_millis(2))).unwrap(), 0);
        }
        let collects = poller.collects() - collects_before;
        let elapsed = began.elapsed();
        // One a 200 us, one or two a select (its first look may find 200 us
        // passed), and a few while the interval grows.
        let most = elapsed.as_micros() as u64 / 200 + 4 * u64::from(SPINS) + 16;
        assert!(
            collects <= most,
            "{transport:?}: {collects} collects in {elapsed:?} of spinning (at most {most} expected)"
        );

        // Yet it sees what the armed socket waits for.
        let late = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        assert!(late.finish_connect(true).unwrap());
        assert_eq!(select_for(&poller, &interests, 0, ops::ACCEPT), ops::ACCEPT, "{transport:?}");
    }
}

/// A selector that never sleeps arms the sockets that stay idle past its
/// cool-down, then no longer asks them, and still sees data that arrives for
/// any of them: with no hot socket left, only their signals can tell it.
#[test]
fn a_busy_polling_selector_sees_data_for_every_socket_it_armed() {
    const SOCKETS: usize = 4;
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let pairs: Vec<_> = (0..SOCKETS).map(|_| connected_pair(&listener, addr, transport)).collect();
        let poller = Poller::new(PollMode::Busy).unwrap();
        for (slot, (_, server)) in pairs.iter().enumerate() {
            poller.register(slot, Arc::clone(server)).unwrap();
        }
        let interests = vec![ops::READ as i32; SOCKETS];
        let mut ready = vec![0i32; 2 * SOCKETS];
        // Spinning past the cool-down arms them all: then none is asked. A
        // socket armed late in a select (its thread descheduled on a busy
        // host) may be asked once more in the next, for the edge its arming
        // raised (a kernel socket reports its state when watched).
        assert_eq!(poller.select(&interests, &mut ready, Some(Duration::from_millis(50))).unwrap(), 0);
        let quiet = (0..50).any(|_| {
            let asks = poller.asks();
            assert_eq!(poller.select(&interests, &mut ready, Some(Duration::from_millis(20))).unwrap(), 0);
            poller.asks() == asks
        });
        assert!(quiet, "{transport:?}: quiet armed sockets were asked in every one of 50 selects");

        let mut buf = [0u8; 8];
        for (slot, (client, server)) in pairs.iter().enumerate() {
            assert_eq!(client.write(b"late", true).unwrap(), 4);
            assert_eq!(select_for(&poller, &interests, slot as i32, ops::READ), ops::READ, "{transport:?}");
            assert_eq!(server.read(&mut buf, false, None).unwrap(), 4);
        }
    }
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) }, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Spinning only pays over memory: an adaptive selector whose sockets are all
/// kernel sockets (the tcp medium; a listener) learns of them only from their
/// signals, so it sleeps in `epoll_wait` at once, as the JDK's does, and still
/// sees what arrives.
#[test]
fn an_adaptive_selector_of_kernel_sockets_sleeps_instead_of_spinning() {
    let (listener, addr) = listen(Transport::Tcp);
    let (client, server) = connected_pair(&listener, addr, Transport::Tcp);
    let poller = Poller::new(PollMode::Adaptive(Duration::from_secs(10))).unwrap();
    poller.register(0, Arc::clone(&listener)).unwrap();
    poller.register(1, Arc::clone(&server)).unwrap();
    let interests = [ops::ACCEPT as i32, ops::READ as i32];
    let mut ready = [0i32; 4];
    let cpu_before = thread_cpu_time();
    let found = poller.select(&interests, &mut ready, Some(Duration::from_millis(300))).unwrap();
    let cpu = thread_cpu_time() - cpu_before;
    assert_eq!(found, 0, "nothing was sent");
    assert!(cpu < Duration::from_millis(60), "a 300 ms select over idle kernel sockets used {cpu:?} of CPU");

    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        assert_eq!(client.write(b"late", true).unwrap(), 4);
        client
    });
    assert_eq!(select_for(&poller, &interests, 1, ops::READ), ops::READ);
    let mut buf = [0u8; 8];
    assert_eq!(server.read(&mut buf, false, None).unwrap(), 4);
    assert_eq!(server.read(&mut buf, false, None).unwrap(), status::UNAVAILABLE);
    writer.join().unwrap().close();
    assert_eq!(select_for(&poller, &interests, 1, ops::READ), ops::READ, "end of stream is readable");
    assert_eq!(server.read(&mut buf, false, None).unwrap(), status::EOF);
}

/// A socket that stays ready (for writing) is not armed, yet a change that
/// only its signals tell (a kernel socket's new data) shows at the next select.
#[test]
fn a_socket_ready_to_write_shows_data_at_the_next_select() {
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let (client, server) = connected_pair(&listener, addr, transport);
        let poller = Poller::new(PollMode::Adaptive(Duration::from_micros(50))).unwrap();
        poller.register(0, Arc::clone(&server)).unwrap();
        let interests = [(ops::READ | ops::WRITE) as i32];
        let mut ready = [0i32; 2];
        assert_eq!(poller.select(&interests, &mut ready, TIMEOUT).unwrap(), 1);
        assert_eq!(ready[1] as u32, ops::WRITE, "{transport:?}");
        assert_eq!(client.write(b"ping", true).unwrap(), 4);
        thread::sleep(Duration::from_millis(20)); // landed, whatever the medium
        assert_eq!(poller.select(&interests, &mut ready, TIMEOUT).unwrap(), 1);
        assert_eq!(ready[1] as u32, ops::READ | ops::WRITE, "{transport:?}: data unseen while writable");
    }
}

/// A tcp connection from a plain kernel socket (`peer`), its accepted end
/// registered (slot 0, for reading) with a poller, and one message already
/// selected and read, so the registration's own edge is used up.
fn selected_tcp_connection_from_a_plain_peer() -> (std::net::TcpStream, Arc<Socket>, Poller) {
    use std::io::Write;
    let (listener, addr) = listen(Transport::Tcp);
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    let server = listener.accept(true, TIMEOUT).unwrap().expect("an accepted connection");
    let poller = Poller::new(PollMode::Blocking).unwrap();
    poller.register(0, Arc::clone(&server)).unwrap();
    peer.write_all(b"warm").unwrap();
    assert_eq!(select_for(&poller, &[ops::READ as i32], 0, ops::READ), ops::READ);
    assert_eq!(server.read(&mut [0u8; 64], false, None).unwrap(), 4);
    (peer, server, poller)
}

/// A read stops short at TCP's urgent mark with data behind it, so a short
/// read does not always mean the socket is drained: data a peer sent after
/// urgent data must still be reported (the JDK's level-triggered selector
/// does), not wait for more to arrive.
#[test]
fn data_after_a_peers_urgent_byte_is_still_reported() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (mut peer, server, poller) = selected_tcp_connection_from_a_plain_peer();
    peer.write_all(b"before").unwrap();
    // SAFETY: one byte from a live buffer on a connected socket.
    assert_eq!(unsafe { libc::send(peer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) }, 1);
    peer.write_all(b"after").unwrap();
    thread::sleep(Duration::from_millis(50)); // everything has arrived: no later edge will come
    let (mut got, mut buf, mut ready) = (Vec::new(), [0u8; 64], [0i32; 2]);
    while got.len() < b"beforeafter".len() {
        let found = poller.select(&[ops::READ as i32], &mut ready, Some(Duration::from_secs(2))).unwrap();
        assert_eq!(found, 1, "{:?} read, the rest never reported", String::from_utf8_lossy(&got));
        let n = server.read(&mut buf, false, None).unwrap();
        got.extend_from_slice(&buf[..n.max(0) as usize]);
    }
    assert_eq!(got, b"beforeafter", "the urgent byte is out of band, the rest in order");
}

/// A peer's last message and its close that arrive together: the read that
/// takes the message (short) also takes the end of stream, after which no
/// edge comes; the selector must still report the end of stream, as the
/// JDK's level-triggered one does.
#[test]
fn a_last_message_and_the_close_behind_it_are_both_reported() {
    use std::io::Write;
    let (mut peer, server, poller) = selected_tcp_connection_from_a_plain_peer();
    peer.write_all(b"last").unwrap();
    drop(peer);
    thread::sleep(Duration::from_millis(50)); // the message and the close have arrived
    let (mut buf, mut ready) = ([0u8; 64], [0i32; 2]);
    assert_eq!(select_for(&poller, &[ops::READ as i32], 0, ops::READ), ops::READ);
    assert_eq!(server.read(&mut buf, false, None).unwrap(), 4);
    let found = poller.select(&[ops::READ as i32], &mut ready, Some(Duration::from_secs(2))).unwrap();
    assert_eq!(found, 1, "the end of stream was never reported");
    assert_eq!(server.read(&mut buf, false, None).unwrap(), status::EOF);
}

/// The CPU time a selector in `mode` takes to receive `messages` messages
/// that a peer sends one every `period`, over shared memory.
fn cpu_to_select_messages(mode: PollMode, messages: usize, period: Duration) -> Duration {
    let (listener, addr) = listen(Transport::Shm);
    let (client, server) = connected_pair(&listener, addr, Transport::Shm);
    let poller = Poller::new(mode).unwrap();
    poller.register(0, Arc::clone(&server)).unwrap();
    let writer = thread::spawn(move || {
        for _ in 0..messages {
            thread::sleep(period);
            assert_eq!(client.write(b"tick", true).unwrap(), 4);
        }
        client
    });
    let cpu_before = thread_cpu_time();
    let mut buf = [0u8; 64];
    let mut received = 0;
    while received < 4 * messages {
        assert_eq!(select_for(&poller, &[ops::READ as i32], 0, ops::READ), ops::READ);
        received += server.read(&mut buf, false, None).unwrap().max(0) as usize;
    }
    let cpu = thread_cpu_time() - cpu_before;
    writer.join().unwrap();
    cpu
}

/// An adaptive selector whose peer answers slower than its spin stops
/// spinning (each spin would run out, on a core the peer may need) and
/// still sees every message.
#[test]
fn an_adaptive_selector_stops_spinning_for_a_peer_slower_than_its_spin() {
    const MESSAGES: usize = 40;
    const SPIN: Duration = Duration::from_millis(20);
    let period = Duration::from_millis(30);
    let sleeping = cpu_to_select_messages(PollMode::Blocking, MESSAGES, period);
    let adaptive = cpu_to_select_messages(PollMode::Adaptive(SPIN), MESSAGES, period);
    // Spinning through every wait would add MESSAGES x SPIN (800 ms).
    let spun = adaptive.saturating_sub(sleeping);
    assert!(
        spun < SPIN * MESSAGES as u32 / 2,
        "{MESSAGES} waits longer than the spin took {spun:?} of CPU more than sleeping ({sleeping:?})"
    );
}

/// A selector leaves its wake-ups' signals unconsumed where the medium allows
/// it (an edge each; a syscall less per wake-up): a socket then deregistered
/// and read in blocking mode consumes them, and sleeps rather than spins.
#[test]
fn a_blocking_read_after_selecting_sleeps_on_what_the_selector_left() {
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let (client, server) = connected_pair(&listener, addr, transport);
        let poller = Poller::new(PollMode::Blocking).unwrap();
        poller.register(0, Arc::clone(&server)).unwrap();
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            assert_eq!(client.write(b"ping", true).unwrap(), 4);
            assert_eq!(select_for(&poller, &[ops::READ as i32], 0, ops::READ), ops::READ, "{transport:?}");
            assert_eq!(server.read(&mut buf, false, None).unwrap(), 4);
        }
        poller.deregister(0);
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            assert_eq!(client.write(b"late", true).unwrap(), 4);
            client
        });
        let cpu_before = thread_cpu_time();
        assert_eq!(server.read(&mut buf, true, TIMEOUT).unwrap(), 4, "{transport:?}");
        let cpu = thread_cpu_time() - cpu_before;
        assert!(
            cpu < Duration::from_millis(100),
            "{transport:?}: a 200 ms blocking read used {cpu:?} of CPU"
        );
        writer.join().unwrap();
    }
}

/// The RDMA connections that a listener registered with a selector accepts
/// share the selector's completion queue (other connections have their own).
/// Two threads then wait on one queue: one asleep in a blocking read, one
/// polling without blocking (so it takes the sleeper's completions off the
/// queue too); the sleeper must still wake for every message.
#[test]
fn accepted_connections_share_their_selectors_completion_queue() {
    const ROUNDS: u32 = 200;
    const CONNECTIONS: usize = 10;
    for transport in transports() {
        let (listener, addr, poller) = selected_listener(transport);
        common::await_closes(); // the queues of streams closed earlier are gone
        let queues_before = rdmanio::completion_queues();
        // Enough connections that the shared queue must grow (an RDMA stream reserves 128 entries).
        let mut pairs: Vec<_> =
            (0..CONNECTIONS).map(|_| connected_pair(&listener, addr, transport)).collect();
        if transport == Transport::Rdma {
            let made = rdmanio::completion_queues() - queues_before;
            assert_eq!(made, CONNECTIONS + 1, "one queue per client and one for all accepted connections");
        }
        let (to_sleeper, sleeper) = pairs.pop().unwrap();
        let (to_poller, polled) = pairs.pop().unwrap();
        let sleeping = thread::spawn(move || {
            for round in 0..ROUNDS {
                let mut got = [0u8; 4];
                let mut at = 0;
                while at < 4 {
                    let n = sleeper.read(&mut got[at..], true, TIMEOUT).unwrap_or_else(|err| panic!("{err}"));
                    assert!(n > 0, "round {round}: end of stream");
                    at += n as usize;
                }
                assert_eq!(u32::from_le_bytes(got), round);
            }
        });
        let polling = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut got = 0;
            let mut buf = [0u8; 64];
            while got < 4 * ROUNDS as usize {
                assert!(Instant::now() < deadline, "the polled connection stalled");
                match polled.read(&mut buf, false, None).unwrap() {
                    n if n > 0 => got += n as usize,
                    status::UNAVAILABLE => thread::yield_now(),
                    other => panic!("polled read: {other}"),
                }
            }
        });
        for round in 0..ROUNDS {
            assert_eq!(to_sleeper.write(&round.to_le_bytes(), true).unwrap(), 4);
            // The sleeper falls asleep again while the other thread polls the queue.
            thread::sleep(Duration::from_micros(300));
            assert_eq!(to_poller.write(&round.to_le_bytes(), true).unwrap(), 4);
        }
        sleeping.join().unwrap_or_else(|_| panic!("{transport:?}: the sleeping reader missed a wake-up"));
        polling.join().unwrap();
        poller.deregister(0);
    }
}

/// A socket registered with a selector before it connects (NIO's non-blocking
/// connect) makes its RDMA connection at the selector's completion queue, so
/// the connections a selector makes share one queue, as those it accepts do.
#[test]
fn sockets_registered_before_they_connect_share_their_selectors_completion_queue() {
    const CONNECTIONS: usize = 3;
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let poller = Poller::new(PollMode::Blocking).unwrap();
        common::await_closes();
        let queues_before = rdmanio::completion_queues();
        let mut pairs = Vec::new();
        for slot in 0..CONNECTIONS {
            let client = Socket::open(Spin::For(Duration::ZERO)).unwrap();
            poller.register(slot, Arc::clone(&client)).unwrap();
            client.start_connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
            assert!(client.finish_connect(true).unwrap());
            let server = listener.accept(true, None).unwrap().expect("an accepted connection");
            pairs.push((client, server));
        }
        if transport == Transport::Rdma {
            let made = rdmanio::completion_queues() - queues_before;
            assert_eq!(made, 1 + CONNECTIONS, "one queue for the clients, one per accepted connection");
        }
        let interests = vec![ops::READ as i32; CONNECTIONS];
        let mut buf = [0u8; 8];
        for (slot, (client, server)) in pairs.iter().enumerate() {
            assert_eq!(server.write(b"back", true).unwrap(), 4);
            assert_eq!(select_for(&poller, &interests, slot as i32, ops::READ), ops::READ, "{transport:?}");
            assert_eq!(client.read(&mut buf, false, None).unwrap(), 4, "{transport:?}");
        }
    }
}

/// A selector that armed a socket must hear of data that arrived for it even
/// when another thread's operation on the socket takes that data in first
/// (over RDMA, a write polls the completions and so consumes the receive's):
/// the socket is readable, and nothing else would tell the selector. Over
/// RDMA, with a completion queue of the connection's own, and with the
/// selector's (its listener registered with the selector).
#[test]
fn an_armed_socket_signals_data_that_a_write_took_in() {
    for (transport, listener_registered) in transports().into_iter().flat_map(|t| [(t, false), (t, true)]) {
        let (listener, addr) = listen(transport);
        let poller = Poller::new(PollMode::Busy).unwrap();
        if listener_registered {
            poller.register(1, Arc::clone(&listener)).unwrap();
        }
        let (client, server) = connected_pair(&listener, addr, transport);
        poller.register(0, Arc::clone(&server)).unwrap();
        let interests = [ops::READ as i32];
        let mut ready = [0i32; 2];
        // Spinning past the cool-down arms the socket.
        assert_eq!(poller.select(&interests, &mut ready, Some(Duration::from_millis(50))).unwrap(), 0);

        assert_eq!(client.write(b"late", true).unwrap(), 4);
        // Time for the message to land, then a write that takes it in.
        thread::sleep(Duration::from_millis(100));
        assert_eq!(server.write(b"x", false).unwrap(), 1);
        let case = format!("{transport:?}, listener registered: {listener_registered}");
        assert_eq!(select_for(&poller, &interests, 0, ops::READ), ops::READ, "{case}");
        let mut buf = [0u8; 8];
        assert_eq!(server.read(&mut buf, false, None).unwrap(), 4, "{case}");
    }
}

/// A half close makes a writer that waited for room writable (its writes fail
/// at once), with no signal from the medium: the socket kicks its selectors.
#[test]
fn an_armed_writer_becomes_writable_when_its_output_shuts() {
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let (client, _server) = connected_pair(&listener, addr, transport);
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        while client.write(&chunk, false).unwrap() > 0 {
            sent += chunk.len();
            assert!(sent < 64 << 20, "{transport:?}: 64 MiB went in without the reader reading");
        }
        let poller = Poller::new(PollMode::Blocking).unwrap();
        poller.register(0, Arc::clone(&client)).unwrap();
        let interests = [ops::WRITE as i32];
        let mut ready = [0i32; 2];
        if transport != Transport::Tcp {
            // (A kernel socket may find room again at once, as its buffers drain to the peer's.)
            let found = poller.select(&interests, &mut ready, Some(Duration::from_millis(10))).unwrap();
            assert_eq!(found, 0, "{transport:?}: writable although a write took nothing");
        }
        client.shutdown_output().unwrap();
        assert_eq!(select_for(&poller, &interests, 0, ops::WRITE), ops::WRITE, "{transport:?}");
        assert!(client.write(b"more", false).is_err(), "{transport:?}: a write after shutdown_output");
    }
}

#[test]
fn wakeup_ends_a_select_even_before_it_starts() {
    let poller = Arc::new(Poller::new(PollMode::Blocking).unwrap());
    let mut ready = [0i32; 4];
    poller.wakeup().unwrap();
    let started = Instant::now();
    assert_eq!(poller.select(&[], &mut ready, None).unwrap(), 0);
    poller.clear_wakeup().unwrap();
    assert_eq!(poller.select(&[], &mut ready, Some(Duration::from_millis(50))).unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_millis(50), "a cleared wakeup ended a select");

    let waker = Arc::clone(&poller);
    let thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        waker.wakeup().unwrap();
    });
    let started = Instant::now();
    assert_eq!(poller.select(&[], &mut ready, Some(Duration::from_secs(20))).unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(10), "wakeup did not end the select");
    thread.join().unwrap();
}

#[test]
fn close_wakes_blocked_readers_writers_and_acceptors() {
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        assert!(client.finish_connect(true).unwrap());
        let server = listener.accept(true, None).unwrap().unwrap();
        let reader = {
            let client = Arc::clone(&client);
            thread::spawn(move || client.read(&mut [0u8; 8], true, None))
        };
        let acceptor = {
            let listener = Arc::clone(&listener);
            thread::spawn(move || listener.accept(true, None).map(|s| s.is_some()))
        };
        thread::sleep(Duration::from_millis(200));
        client.close();
        listener.close();
        let read = reader.join().unwrap();
        assert!(matches!(read, Err(rdmanio::Error::Closed("read"))), "{transport:?}: {read:?}");
        let accepted = acceptor.join().unwrap();
        assert!(matches!(accepted, Err(rdmanio::Error::Closed("accept"))), "{transport:?}: {accepted:?}");
        drop(server);
    }
}

#[test]
fn a_half_close_ends_the_stream_after_its_bytes_and_reading_goes_on() {
    for transport in transports() {
        let (listener, addr) = listen(transport);
        let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        assert!(client.finish_connect(true).unwrap());
        let server = listener.accept(true, None).unwrap().unwrap();
        assert_eq!(client.write(b"request", true).unwrap(), 7);
        client.shutdown_output().unwrap();
        assert!(client.write(b"more", true).is_err(), "{transport:?}: a write after shutdown_output");
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf, true, TIMEOUT).unwrap(), 7);
        assert_eq!(server.read(&mut buf, true, TIMEOUT).unwrap(), status::EOF, "{transport:?}");
        assert_eq!(server.write(b"reply", true).unwrap(), 5, "{transport:?}: the other direction is open");
        assert_eq!(client.read(&mut buf, true, TIMEOUT).unwrap(), 5);
        assert_eq!(&buf[..5], b"reply");
    }
}

#[test]
fn connecting_to_nobody_fails_through_finish_connect() {
    for transport in transports() {
        let addr = SocketAddr::new(ip(), free_port());
        let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        let poller = Poller::new(PollMode::Blocking).unwrap();
        poller.register(0, Arc::clone(&client)).unwrap();
        assert_eq!(
            select_for(&poller, &[ops::CONNECT as i32], 0, ops::CONNECT),
            ops::CONNECT,
            "{transport:?}"
        );
        let err = client.finish_connect(false).unwrap_err();
        assert!(matches!(err, rdmanio::Error::ConnectionRefused(_)), "{transport:?}: {err}");
        assert!(client.finish_connect(false).is_err(), "the failure stays");
    }
}

#[test]
fn many_clients_connect_at_once_and_each_is_accepted() {
    const CLIENTS: usize = 8;
    for transport in transports() {
        let (listener, addr, poller) = selected_listener(transport);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                thread::spawn(move || {
                    let client =
                        Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
                    assert!(client.finish_connect(true).unwrap(), "client {i}");
                    assert_eq!(client.write(&[i as u8], true).unwrap(), 1);
                    client
                })
            })
            .collect();
        let mut accepted = Vec::new();
        while accepted.len() < CLIENTS {
            assert_eq!(
                select_for(&poller, &[ops::ACCEPT as i32], 0, ops::ACCEPT),
                ops::ACCEPT,
                "{transport:?}"
            );
            while let Some(server) = listener.accept(false, None).unwrap() {
                accepted.push(server);
            }
        }
        let mut seen: Vec<u8> = accepted
            .iter()
            .map(|server| {
                let mut byte = [0u8; 1];
                assert_eq!(server.read(&mut byte, true, TIMEOUT).unwrap(), 1);
                byte[0]
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..CLIENTS as u8).collect::<Vec<_>>(), "{transport:?}");
        for client in clients {
            client.join().unwrap();
        }
    }
}

/// A listener is reported ready while a connection waits, and only then (a
/// ready listener whose accept finds nothing would keep its selector
/// spinning); closing it ends a connection the selector saw but nobody
/// accepted (over TCP the selector's look takes it from the kernel).
#[test]
fn a_listener_is_ready_only_while_a_connection_waits_and_its_close_ends_the_rest() {
    for transport in transports() {
        let (listener, addr, poller) = selected_listener(transport);
        let mut ready = [0i32; 4];
        let connect = || {
            let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
            assert!(client.finish_connect(true).unwrap(), "{transport:?}");
            client
        };
        let _first = connect();
        assert_eq!(select_for(&poller, &[ops::ACCEPT as i32], 0, ops::ACCEPT), ops::ACCEPT, "{transport:?}");
        assert!(
            listener.accept(false, None).unwrap().is_some(),
            "{transport:?}: reported, nothing to accept"
        );
        assert!(listener.accept(false, None).unwrap().is_none(), "{transport:?}");
        for _ in 0..3 {
            let n =
                poller.select(&[ops::ACCEPT as i32], &mut ready, Some(Duration::from_millis(50))).unwrap();
            assert_eq!(n, 0, "{transport:?}: a drained listener was reported ready");
        }
        let second = connect();
        assert_eq!(select_for(&poller, &[ops::ACCEPT as i32], 0, ops::ACCEPT), ops::ACCEPT, "{transport:?}");
        poller.deregister(0);
        listener.close();
        let mut byte = [0u8; 1];
        let read = second.read(&mut byte, true, TIMEOUT);
        let ended = matches!(read, Ok(status::EOF) | Err(rdmanio::Error::ConnectionReset));
        assert!(ended, "{transport:?}: the unaccepted connection read {read:?}");
    }
}

/// A listener closed while a selector watches it keeps its fd numbers until
/// it drops (its port is free at once): a socket made after the close cannot
/// get one of them, so the selector's forgetting the listener cannot take
/// that socket's fd out of its epoll set. (The listener's fds were closed at
/// once: the next connection reused a number, and its data never showed.)
#[test]
fn a_closed_listener_keeps_its_fds_from_sockets_made_after() {
    for transport in transports() {
        let (listener, addr, poller) = selected_listener(transport);
        let mut ready = [0i32; 4];
        poller.select(&[ops::ACCEPT as i32], &mut ready, Some(Duration::ZERO)).unwrap();
        let (next_listener, next_addr) = listen(transport);
        let client = Socket::open(Spin::For(Duration::ZERO)).unwrap();
        listener.close();
        assert!(std::net::TcpListener::bind(addr).is_ok(), "{transport:?}: the port stayed taken");
        // The lowest free fd number is the one a close freed: the client's connection takes it.
        client.start_connect(next_addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        // An RDMA connect moves on only while someone looks at it.
        assert!(client.finish_connect(true).unwrap(), "{transport:?}");
        let server = next_listener.accept(true, TIMEOUT).unwrap().expect("accepted");
        poller.register(1, Arc::clone(&client)).unwrap();
        let interests = [0, ops::READ as i32];
        // Nothing to read: the client is armed, and learns of data from its fds alone.
        assert_eq!(poller.select(&interests, &mut ready, Some(Duration::ZERO)).unwrap(), 0);
        poller.deregister(0);
        assert_eq!(server.write(b"x", true).unwrap(), 1);
        assert_eq!(
            select_for(&poller, &interests, 1, ops::READ),
            ops::READ,
            "{transport:?}: data never showed"
        );
    }
}

/// `auto` to a plain TCP listener (no rdma-nio listener there): shm refuses at
/// once and, where the host has an RDMA device, rdma_cm refuses after a round
/// trip, so the connect goes on over TCP, on another fd than the one the
/// selector watched first; the selector sees it connect, and bytes cross.
#[test]
fn an_auto_connect_past_a_refusing_medium_is_seen_by_its_selector() {
    let plain = TcpListener::bind((ip(), 0)).unwrap();
    let addr = plain.local_addr().unwrap();
    let poller = Poller::new(PollMode::Blocking).unwrap();
    let client = Socket::open(Spin::For(Duration::ZERO)).unwrap();
    poller.register(0, Arc::clone(&client)).unwrap();
    client.start_connect(addr, Transport::Auto, TransportOptions::default(), TIMEOUT).unwrap();
    assert_eq!(select_for(&poller, &[ops::CONNECT as i32], 0, ops::CONNECT), ops::CONNECT);
    assert!(client.finish_connect(false).unwrap());
    let (mut served, _) = plain.accept().unwrap();
    assert_eq!(client.write(b"plain", true).unwrap(), 5);
    let mut received = [0u8; 5];
    std::io::Read::read_exact(&mut served, &mut received).unwrap();
    assert_eq!(&received, b"plain");
    poller.deregister(0);
}

/// A reader and a writer thread blocked on each end of one connection at once,
/// both polling before they sleep: a mebibyte each way, no wakeup lost.
#[test]
fn a_reader_and_a_writer_thread_share_each_socket() {
    const LEN: usize = 1 << 20;
    for transport in transports() {
        for spin in [Spin::For(Duration::ZERO), Spin::For(Duration::from_micros(50))] {
            let listener = Socket::open(spin).unwrap();
            listener
                .start_listen(SocketAddr::new(ip(), 0), transport, TransportOptions::default(), 8)
                .unwrap();
            let (addr, _) = listener.addresses().unwrap();
            let client = Socket::open(spin).unwrap();
            client.start_connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
            assert!(client.finish_connect(true).unwrap());
            let server = listener.accept(true, None).unwrap().unwrap();
            let up: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
            let down: Vec<u8> = (0..LEN).map(|i| (i % 241) as u8).collect();
            let mut threads = Vec::new();
            for (socket, outgoing, incoming) in [(&client, &up, &down), (&server, &down, &up)] {
                let (writer, reader) = (Arc::clone(socket), Arc::clone(socket));
                let outgoing = outgoing.clone();
                let expected = incoming.clone();
                threads.push(thread::spawn(move || {
                    for chunk in outgoing.chunks(40_000) {
                        assert_eq!(writer.write(chunk, true).unwrap(), chunk.len());
                    }
                }));
                threads.push(thread::spawn(move || {
                    let mut received = Vec::with_capacity(LEN);
                    let mut buf = vec![0u8; 50_000];
                    while received.len() < LEN {
                        let n = reader.read(&mut buf, true, TIMEOUT).unwrap();
                        assert!(n > 0);
                        received.extend_from_slice(&buf[..n as usize]);
                    }
                    assert!(received == expected, "{transport:?}, {spin:?}: the bytes differ");
                }));
            }
            for thread in threads {
                thread.join().unwrap();
            }
        }
    }
}

/// The accepted end of a connection from a `test-peer idle` process over
/// `transport`, and the process.
fn connection_from_an_idle_process(transport: Transport) -> (Arc<Socket>, Child) {
    let (listener, addr) = listen(transport);
    let name = match transport {
        Transport::Tcp => "tcp",
        Transport::Shm => "shm",
        _ => "rdma",
    };
    let peer = common::spawn_idle_peer(name, addr);
    (listener.accept(true, None).unwrap().expect("the peer's connection"), peer)
}

/// Kills `peer` (SIGKILL) after a moment, from another thread; the thread
/// returns when the process was reaped.
fn kill_soon(mut peer: Child) -> thread::JoinHandle<Instant> {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        peer.kill().expect("kill");
        peer.wait().unwrap();
        Instant::now()
    })
}

/// What a read after the peer's death must say: end of stream (over RDMA, an
/// error is as good).
fn assert_ended(transport: Transport, read: rdmanio::Result<isize>) {
    match read {
        Ok(n) => assert_eq!(n, status::EOF, "{transport:?}"),
        Err(err) => assert_eq!(transport, Transport::Rdma, "{transport:?}: {err}"),
    }
}

/// A peer process killed (SIGKILL) while idle: a selector asleep on the
/// connection sees it readable, and the read says end of stream. On every
/// medium: over shm no closed flag is set and no doorbell rings, so only the
/// connection's liveness channel can tell.
#[test]
fn a_selector_sees_a_killed_peer_process() {
    for transport in transports() {
        let (server, peer) = connection_from_an_idle_process(transport);
        let poller = Poller::new(PollMode::Blocking).unwrap();
        poller.register(0, Arc::clone(&server)).unwrap();
        let interests = [ops::READ as i32];
        let mut ready = [0i32; 4];
        assert_eq!(poller.select(&interests, &mut ready, Some(Duration::ZERO)).unwrap(), 0, "{transport:?}");
        let killer = kill_soon(peer); // the selector is asleep when the peer dies
        assert_eq!(select_for(&poller, &interests, 0, ops::READ), ops::READ, "{transport:?}");
        let seen_after = killer.join().unwrap().elapsed();
        let mut buf = [0u8; 16];
        assert_ended(transport, server.read(&mut buf, false, None));
        println!("{transport:?}: a selector saw the peer's death {seen_after:?} after it was reaped");
    }
}

/// A connection's peer closes while the socket is hot (asked on every look:
/// it is ready to write) and selects collect the signals first (a
/// `selectNow` loop, an idle listener armed beside it): the signal of the
/// close comes while the socket is not armed, and it must keep what it said,
/// so that a select for reading alone, which arms it and sleeps, still sees it
/// readable. Over RDMA a close makes the peer readable by its disconnect
/// alone (its CLOSED message only says how it closed), a connection event
/// whose fd signals once; a stream that ignored that signal learnt of it only
/// on every 1024th empty look, and the armed socket slept through the close.
#[test]
fn a_selector_sees_a_close_that_came_while_the_socket_was_hot() {
    for transport in transports() {
        let (listener, addr, poller) = selected_listener(transport);
        let client = Socket::connect(addr, transport, TransportOptions::default(), TIMEOUT).unwrap();
        assert!(client.finish_connect(true).unwrap());
        let server = listener.accept(true, None).unwrap().expect("an accepted connection");
        poller.register(1, Arc::clone(&client)).unwrap(); // as in a selector serving both ends
        poller.register(2, Arc::clone(&server)).unwrap();
        let mut ready = [0i32; 8];
        let both = [ops::ACCEPT as i32, 0, (ops::READ | ops::WRITE) as i32];
        assert_eq!(poller.select(&both, &mut ready, Some(Duration::ZERO)).unwrap(), 1, "{transport:?}");
        assert_eq!(ready[..2], [2, ops::WRITE as i32], "{transport:?}: only writable while the peer is open");

        client.close();
        thread::sleep(Duration::from_millis(500)); // the close's signals come
        for _ in 0..3 {
            assert_eq!(poller.select(&both, &mut ready, Some(Duration::ZERO)).unwrap(), 1, "{transport:?}");
        }
        let interests = [ops::ACCEPT as i32, 0, ops::READ as i32];
        assert_eq!(
            select_for(&poller, &interests, 2, ops::READ),
            ops::READ,
            "{transport:?}: the close went unseen"
        );
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf, false, None).unwrap(), status::EOF, "{transport:?}");
    }
}

/// The other end of the liveness channel: a client whose connection waits in
/// a listener's queue, asleep in a selector, sees the listener close without
/// accepting it (the channel's end it handed over goes with the queue; over
/// shm nothing else tells), and the read says end of stream.
#[test]
fn a_selector_sees_a_listener_close_with_the_connection_unaccepted() {
    let (listener, addr) = listen(Transport::Shm);
    let client = Socket::connect(addr, Transport::Shm, TransportOptions::default(), TIMEOUT).unwrap();
    assert!(client.finish_connect(true).unwrap());
    let poller = Poller::new(PollMode::Blocking).unwrap();
    poller.register(0, Arc::clone(&client)).unwrap();
    let interests = [ops::READ as i32];
    let mut ready = [0i32; 4];
    assert_eq!(poller.select(&interests, &mut ready, Some(Duration::ZERO)).unwrap(), 0);
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200)); // the selector is asleep when the listener closes
        listener.close();
    });
    assert_eq!(select_for(&poller, &interests, 0, ops::READ), ops::READ, "the close never showed");
    closer.join().unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf, false, None).unwrap(), status::EOF);
}

/// The same for a thread blocked in a read.
#[test]
fn a_blocked_reader_sees_a_killed_peer_process() {
    for transport in transports() {
        let (server, peer) = connection_from_an_idle_process(transport);
        let killer = kill_soon(peer);
        let mut buf = [0u8; 16];
        assert_ended(transport, server.read(&mut buf, true, TIMEOUT));
        let seen_after = killer.join().unwrap().elapsed();
        println!("{transport:?}: a blocked reader saw the peer's death {seen_after:?} after it was reaped");
    }
}

/// A blocking read without a timeout on the tcp medium sleeps in the
/// kernel's `recv` itself (one syscall per read, as the JDK's blocking
/// channel), and each way its wait can end wakes it there: data, reading
/// shut down (end of stream), a close and an abortive close (`Closed`; the
/// peer of the latter sees the reset).
#[test]
fn a_blocking_tcp_read_sleeps_in_recv_and_every_end_wakes_it() {
    for end in ["data", "shutdown_input", "close", "abort"] {
        let (listener, addr) = listen(Transport::Tcp);
        let client = Socket::connect(addr, Transport::Tcp, TransportOptions::default(), TIMEOUT).unwrap();
        assert!(client.finish_connect(true).unwrap());
        let server = listener.accept(true, None).unwrap().unwrap();
        let (tid_sender, tid) = std::sync::mpsc::channel();
        let reader = {
            let client = Arc::clone(&client);
            thread::spawn(move || {
                // SAFETY: gettid has no arguments and cannot fail.
                tid_sender.send(unsafe { libc::gettid() }).unwrap();
                let mut buf = [0u8; 8];
                client.read(&mut buf, true, None).map(|n| (n, buf))
            })
        };
        let asleep_in = syscall_asleep_in(tid.recv().unwrap());
        assert_eq!(
            asleep_in,
            libc::SYS_recvfrom,
            "{end}: the reader sleeps in syscall {asleep_in}, not in recv"
        );
        match end {
            "data" => assert_eq!(server.write(b"ping", true).unwrap(), 4),
            "shutdown_input" => client.shutdown_input().unwrap(),
            "close" => client.close(),
            _ => client.abort(),
        }
        let read = reader.join().unwrap();
        match end {
            "data" => assert!(matches!(read, Ok((4, [b'p', b'i', b'n', b'g', ..]))), "{end}: {read:?}"),
            "shutdown_input" => assert!(matches!(read, Ok((status::EOF, _))), "{end}: {read:?}"),
            _ => assert!(matches!(read, Err(rdmanio::Error::Closed("read"))), "{end}: {read:?}"),
        }
        if end == "abort" {
            let seen = server.read(&mut [0u8; 8], true, TIMEOUT);
            assert!(
                matches!(seen, Err(rdmanio::Error::ConnectionReset)),
                "the peer of an abort read {seen:?}"
            );
        }
    }
}

/// A blocking reader of shm that sleeps again and again (a ping-pong
/// client) sleeps in the epoll set its connection keeps, where the doorbell
/// is watched edge-triggered: waking costs no read of the doorbell, where
/// poll(2) needed one per wake-up to clear it.
#[test]
fn a_blocking_shm_reader_that_sleeps_again_and_again_reads_no_doorbell() {
    const ROUNDS: u64 = 50;
    let (listener, addr) = listen(Transport::Shm);
    let (client, server) = connected_pair(&listener, addr, Transport::Shm);
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 8];
        while server.read(&mut buf, true, TIMEOUT).unwrap() == 4 {
            thread::sleep(Duration::from_millis(2)); // the reader is asleep by now
            assert_eq!(server.write(&buf[..4], true).unwrap(), 4);
        }
    });
    let reads_so_far = || {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        let line = io.lines().find(|line| line.starts_with("syscr:")).expect("syscr in /proc/thread-self/io");
        line["syscr:".len()..].trim().parse::<u64>().unwrap()
    };
    let mut buf = [0u8; 8];
    let mut round_trip = || {
        assert_eq!(client.write(b"ping", true).unwrap(), 4);
        assert_eq!(client.read(&mut buf, true, TIMEOUT).unwrap(), 4);
    };
    round_trip(); // the first sleep polls; the set is made at the second
    round_trip();
    let look = reads_so_far();
    let before = reads_so_far();
    let looking = before - look; // what reading /proc/thread-self/io takes itself
    for _ in 0..ROUNDS {
        round_trip();
    }
    let reads = reads_so_far() - before - looking;
    client.close();
    echo.join().unwrap();
    assert!(reads <= 2, "{reads} read syscalls in {ROUNDS} round trips, each of which slept");
}

/// The syscall thread `tid` of this process sleeps in, once it sleeps in
/// the same one at two looks 20 ms apart (its number, as
/// `/proc/self/task/TID/syscall` gives it); -1 if it never did within `TIMEOUT`.
fn syscall_asleep_in(tid: libc::pid_t) -> libc::c_long {
    let in_syscall = || {
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
        text.split_whitespace().next().and_then(|number| number.parse::<libc::c_long>().ok())
    };
    let deadline = Instant::now() + TIMEOUT.unwrap();
    let mut last = None;
    while Instant::now() < deadline {
        let now = in_syscall();
        if let Some(number) = now.filter(|_| now == last) {
            return number;
        }
        last = now;
        thread::sleep(Duration::from_millis(20));
    }
    -1
}
