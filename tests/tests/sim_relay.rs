//! Deterministic simulation of the relay: the real `node` driver, ring, ingest
//! and HTTP state machines run over `hal::sim` (in-memory network, virtual
//! clock) with no real sockets. A sender host pushes synthetic MPEG-TS over
//! UDP, reader hosts fetch the channel over HTTP. Each test runs from a fixed
//! seed; a failure message names it so the run can be replayed.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use ringcast::config::Source;
use ringcast::node::{self, ChannelSetup, Node, Settings};
use ringcast_hal::exec::Executor;
use ringcast_hal::sim::{SimClock, SimNet, SimWorld};
use ringcast_hal::{Clock, Error as _, MulticastInterface, Net, TcpStream, UdpSocket};

const PACKET: usize = 188;
const RELAY: [u8; 4] = [10, 0, 0, 1];
const SENDER: [u8; 4] = [10, 0, 0, 2];
const HTTP_PORT: u16 = 8090;
const UDP_PORT: u16 = 5000;
/// A time that never comes, and a pause that never happens.
const NEVER: u64 = u64::MAX / 2;
const NO_PAUSE: (u64, u64) = (NEVER, NEVER);
/// Datagrams of 7 packets every millisecond: about 10.5 Mbit/s.
const DATAGRAM_PACKETS: usize = 7;

/// A synthetic transport stream: a PAT every 50 packets, a video PES start
/// with the random-access flag right after every fourth PAT, and payload
/// packets numbered so that every packet of the stream is unique.
fn synthetic_ts(packets: usize) -> Vec<u8> {
    let mut bytes = vec![0xFFu8; packets * PACKET];
    for (index, packet) in bytes.chunks_mut(PACKET).enumerate() {
        packet[0] = 0x47;
        let counter = (index % 16) as u8;
        if index % 50 == 0 {
            packet[1..4].copy_from_slice(&[0x40, 0x00, 0x10 | counter]);
        } else if index % 200 == 1 {
            // PID 0x100, adaptation field with random access, PES start 0xE0.
            packet[1..4].copy_from_slice(&[0x41, 0x00, 0x30 | counter]);
            packet[4..6].copy_from_slice(&[1, 0x40]);
            packet[6..10].copy_from_slice(&[0, 0, 1, 0xE0]);
        } else {
            packet[1..4].copy_from_slice(&[0x01, 0x00, 0x10 | counter]);
        }
        packet[180..188].copy_from_slice(&(index as u64).to_be_bytes());
    }
    bytes
}

fn settings(readers_max: usize) -> Settings {
    Settings {
        readers_max,
        flush_ms: 20,
        stall_timeout_ms: 2_000,
        header_timeout_ms: 1_000,
        gap_timeout_ms: 5_000,
        linger_ms: 1_000,
        rejoin_interval_ms: 0,
        multicast_interface: MulticastInterface::Any,
        on_demand_channels: 0,
        on_demand_ring_bytes: 0,
        zero_copy: node::ZeroCopy::Remote,
        instant_start: true,
        reader_send_buffer_bytes: 64 * 1024,
        peer_port: 0,
        portmap_check_ms: 300_000,
        dlna: false,
    }
}

struct Relay {
    world: SimWorld,
    node: Rc<Node<SimNet, SimClock>>,
    executor: Executor,
    sent: Rc<RefCell<Vec<u8>>>,
}

fn relay(seed: u64, readers_max: usize, extra_tasks: usize, stream_packets: usize) -> Relay {
    relay_with_ring(
        seed,
        readers_max,
        extra_tasks,
        stream_packets,
        2 * 1024 * 1024,
    )
}

fn relay_with_ring(
    seed: u64,
    readers_max: usize,
    extra_tasks: usize,
    stream_packets: usize,
    ring_bytes: usize,
) -> Relay {
    let world = SimWorld::new(seed);
    let source = Source::Udp {
        group: IpAddr::V4(Ipv4Addr::from(RELAY)),
        port: UDP_PORT,
        source: None,
        interface: None,
    };
    let channel = ChannelSetup {
        name: "sim".into(),
        source,
        ring_bytes,
        program: ringcast::config::ProgramSelect::All,
        output: None,
    };
    let listen = SocketAddr::new(Ipv4Addr::from(RELAY).into(), HTTP_PORT);
    let node = Node::new(
        world.host(RELAY),
        world.clock(),
        settings(readers_max),
        listen,
        vec![channel],
        None,
        seed,
    )
    .expect("relay starts");
    let node = Rc::new(node);
    let mut executor = Executor::new(node.task_count() + extra_tasks + 1);
    node::spawn_all(&node, &mut executor);
    let sent = Rc::new(RefCell::new(Vec::new()));
    let sender = send_stream(
        world.host(SENDER),
        world.clock(),
        synthetic_ts(stream_packets),
        sent.clone(),
    );
    executor.try_spawn(sender).expect("room for the sender");
    Relay {
        world,
        node,
        executor,
        sent,
    }
}

/// Sends the stream as 7-packet datagrams, one per virtual millisecond.
async fn send_stream(net: SimNet, clock: SimClock, stream: Vec<u8>, sent: Rc<RefCell<Vec<u8>>>) {
    let socket = net
        .udp_bind("0.0.0.0:0".parse().unwrap())
        .expect("sender binds");
    let target = SocketAddr::new(Ipv4Addr::from(RELAY).into(), UDP_PORT);
    for datagram in stream.chunks(DATAGRAM_PACKETS * PACKET) {
        socket.send_to(datagram, target).expect("datagram sent");
        sent.borrow_mut().extend_from_slice(datagram);
        let next_ms = clock.now_ms() + 1;
        clock.sleep_until(next_ms).await;
    }
}

/// What a simulated player received.
#[derive(Default)]
struct Capture {
    head: Vec<u8>,
    body: Vec<u8>,
    closed: bool,
}

/// Connects at `start_ms`, asks for the channel and reads to the end, except
/// between `pause_ms.0` and `pause_ms.1`, when it keeps the connection open
/// without reading.
async fn player(
    net: SimNet,
    clock: SimClock,
    start_ms: u64,
    pause_ms: (u64, u64),
    capture: Rc<RefCell<Capture>>,
) {
    clock.sleep_until(start_ms).await;
    let address = SocketAddr::new(Ipv4Addr::from(RELAY).into(), HTTP_PORT);
    let mut stream = net.tcp_connect(address).expect("connect starts");
    stream.writable().await.expect("connected");
    net.connect_result(&stream).expect("connection accepted");
    let request = b"GET /channel/sim.ts HTTP/1.1\r\nHost: relay\r\n\r\n";
    assert_eq!(stream.write(request).expect("request fits"), request.len());
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let now_ms = clock.now_ms();
        if now_ms >= pause_ms.0 && now_ms < pause_ms.1 {
            clock.sleep_until(pause_ms.1).await;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => take_bytes(&mut capture.borrow_mut(), &buffer[..count]),
            Err(error) if error.is_would_block() => {
                let deadline_ms = if clock.now_ms() < pause_ms.0 {
                    pause_ms.0
                } else {
                    NEVER
                };
                let readable = stream.readable();
                futures_or(readable, clock.sleep_until(deadline_ms)).await;
            }
            Err(_) => break,
        }
    }
    capture.borrow_mut().closed = true;
}

fn take_bytes(capture: &mut Capture, bytes: &[u8]) {
    if capture.head.ends_with(b"\r\n\r\n") {
        capture.body.extend_from_slice(bytes);
        return;
    }
    for (index, byte) in bytes.iter().enumerate() {
        capture.head.push(*byte);
        if capture.head.ends_with(b"\r\n\r\n") {
            capture.body.extend_from_slice(&bytes[index + 1..]);
            return;
        }
    }
}

/// Waits for whichever of two futures finishes first.
async fn futures_or<A: std::future::Future, B: std::future::Future>(a: A, b: B) {
    let _ = node::first_of(a, b).await;
}

/// The body must be whole packets, start at a PAT and appear byte for byte,
/// in one piece, inside what was sent.
fn assert_contiguous(body: &[u8], sent: &[u8], seed: u64) {
    assert!(!body.is_empty(), "seed {seed}: the player received nothing");
    assert_eq!(body.len() % PACKET, 0, "seed {seed}: not whole packets");
    assert_eq!(
        &body[1..3],
        &[0x40, 0x00],
        "seed {seed}: does not start at a PAT"
    );
    let first_index = u64::from_be_bytes(body[180..188].try_into().unwrap()) as usize;
    let offset = first_index * PACKET;
    assert_eq!(
        &sent[offset..offset + body.len()],
        body,
        "seed {seed}: bytes differ from the sent stream"
    );
}

#[test]
fn relays_udp_to_http_players_byte_exact() {
    for seed in [1, 2, 3] {
        let players = 3;
        let mut relay = relay(seed, 8, players, 3_000);
        let captures: Vec<_> = (0..players)
            .map(|_| Rc::new(RefCell::new(Capture::default())))
            .collect();
        for (index, capture) in captures.iter().enumerate() {
            let net = relay.world.host([10, 0, 1, index as u8 + 1]);
            let start_ms = 200 + 300 * index as u64;
            let task = player(
                net,
                relay.world.clock(),
                start_ms,
                NO_PAUSE,
                capture.clone(),
            );
            relay.executor.try_spawn(task).expect("room for players");
        }
        relay.world.run_executor(&mut relay.executor, 4_000);
        let sent = relay.sent.borrow();
        assert_eq!(
            sent.len(),
            3_000 * PACKET,
            "seed {seed}: the sender finished"
        );
        for capture in &captures {
            let capture = capture.borrow();
            assert!(
                capture.head.starts_with(b"HTTP/1.1 200 OK\r\n"),
                "seed {seed}"
            );
            assert_contiguous(&capture.body, &sent, seed);
            // Started within a keyframe interval (200 packets) of the live edge,
            // and received everything after that.
            let first_index =
                u64::from_be_bytes(capture.body[180..188].try_into().unwrap()) as usize;
            assert_eq!(
                first_index * PACKET + capture.body.len(),
                sent.len(),
                "seed {seed}: tail missing"
            );
        }
        let channel = &relay.node.channels[0];
        assert_eq!(channel.stats.garbage_bytes.get(), 0);
        assert_eq!(channel.stats.skips.get(), 0);
    }
}

#[test]
fn a_stalled_player_is_dropped_without_slowing_the_others() {
    let seed = 11;
    // 30 000 packets last about 4.3 s: still flowing at the 4 s deadline.
    let mut relay = relay(seed, 8, 2, 30_000);
    let healthy = Rc::new(RefCell::new(Capture::default()));
    let stalled = Rc::new(RefCell::new(Capture::default()));
    let clock = relay.world.clock();
    let task = player(
        relay.world.host([10, 0, 1, 1]),
        clock.clone(),
        100,
        NO_PAUSE,
        healthy.clone(),
    );
    relay.executor.try_spawn(task).expect("room");
    let task = player(
        relay.world.host([10, 0, 1, 2]),
        clock,
        100,
        (300, NEVER),
        stalled.clone(),
    );
    relay.executor.try_spawn(task).expect("room");
    relay.world.run_executor(&mut relay.executor, 4_000);
    let sent = relay.sent.borrow();
    assert_contiguous(&healthy.borrow().body, &sent, seed);
    // The healthy player got every byte from its start to within 50 ms of the
    // live edge, through the whole time the other one stalled (its capture is
    // one contiguous run, so nothing was skipped).
    let body = &healthy.borrow().body;
    let first_index = u64::from_be_bytes(body[180..188].try_into().unwrap()) as usize;
    let lag_bytes = sent.len() - (first_index * PACKET + body.len());
    let lag_max_bytes = 50 * DATAGRAM_PACKETS * PACKET;
    assert!(
        lag_bytes <= lag_max_bytes,
        "seed {seed}: healthy player {lag_bytes} bytes behind"
    );
    // It connected at about 100 ms (700 packets sent): it starts at the newest
    // keyframe chunk, which begins at a PAT every 200 packets.
    assert_eq!(
        first_index % 200,
        0,
        "seed {seed}: starts at a keyframe chunk"
    );
    assert!(
        (400..=800).contains(&first_index),
        "seed {seed}: started at packet {first_index}"
    );
    let channel = &relay.node.channels[0];
    assert_eq!(
        channel.stats.drops.get(),
        1,
        "seed {seed}: the stalled player is dropped"
    );
    assert_eq!(
        channel.stats.readers.get(),
        1,
        "seed {seed}: one player left"
    );
}

#[test]
fn players_over_the_limit_get_503() {
    let seed = 21;
    let mut relay = relay(seed, 1, 2, 1_000);
    let first = Rc::new(RefCell::new(Capture::default()));
    let second = Rc::new(RefCell::new(Capture::default()));
    let clock = relay.world.clock();
    let task = player(
        relay.world.host([10, 0, 1, 1]),
        clock.clone(),
        100,
        NO_PAUSE,
        first.clone(),
    );
    relay.executor.try_spawn(task).expect("room");
    let task = player(
        relay.world.host([10, 0, 1, 2]),
        clock,
        300,
        NO_PAUSE,
        second.clone(),
    );
    relay.executor.try_spawn(task).expect("room");
    relay.world.run_executor(&mut relay.executor, 1_500);
    assert!(first.borrow().head.starts_with(b"HTTP/1.1 200 OK"));
    let second = second.borrow();
    let head = String::from_utf8_lossy(&second.head);
    assert!(head.starts_with("HTTP/1.1 503"), "seed {seed}: {head}");
    assert!(head.contains("Retry-After:"), "seed {seed}: {head}");
    assert_eq!(relay.node.totals.http_rejected.get(), 1);
}

#[test]
fn a_lapped_player_gets_only_whole_packets_and_restarts_at_a_keyframe() {
    let seed = 31;
    // A 256 KiB ring holds about 190 ms of this stream: a 1 s pause laps it.
    let mut relay = relay_with_ring(seed, 4, 1, 20_000, 256 * 1024);
    let capture = Rc::new(RefCell::new(Capture::default()));
    let net = relay.world.host([10, 0, 1, 1]);
    let task = player(net, relay.world.clock(), 100, (500, 1_500), capture.clone());
    relay.executor.try_spawn(task).expect("room");
    relay.world.run_executor(&mut relay.executor, 2_500);
    let sent = relay.sent.borrow();
    let body = &capture.borrow().body;
    assert_eq!(body.len() % PACKET, 0, "seed {seed}: whole packets only");
    let indexes: Vec<usize> = body
        .chunks(PACKET)
        .map(|packet| {
            assert_eq!(packet[0], 0x47, "seed {seed}: misaligned packet");
            let index = u64::from_be_bytes(packet[180..188].try_into().unwrap()) as usize;
            assert_eq!(
                packet,
                &sent[index * PACKET..(index + 1) * PACKET],
                "seed {seed}"
            );
            index
        })
        .collect();
    let jumps: Vec<usize> = (1..indexes.len())
        .filter(|&i| indexes[i] != indexes[i - 1] + 1)
        .collect();
    assert!(
        !jumps.is_empty(),
        "seed {seed}: the player was never lapped"
    );
    for &jump in &jumps {
        assert!(
            indexes[jump] > indexes[jump - 1],
            "seed {seed}: went backwards"
        );
        assert_eq!(
            indexes[jump] % 200,
            0,
            "seed {seed}: resumed at packet {} (not a keyframe)",
            indexes[jump]
        );
    }
    let channel = &relay.node.channels[0];
    assert_eq!(
        channel.stats.skips.get() as usize,
        jumps.len(),
        "seed {seed}: each skip is counted"
    );
    assert_eq!(channel.stats.drops.get(), 0, "seed {seed}");
}
