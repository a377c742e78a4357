//! Tests of the simulated HAL through its public traits: TCP set-up, echo,
//! back-pressure, end of stream and resets; UDP unicast and multicast with
//! membership, latency, upload rate and seeded loss; the virtual clock; and
//! the drivers (`block_on`, `run_until`, stepping by hand).

use core::cell::RefCell;
use core::net::{Ipv4Addr, SocketAddr};
use std::io::IoSlice;
use std::rc::Rc;

use futures_lite::future::{poll_once, zip};
use ringcast_hal::exec::Executor;
use ringcast_hal::sim::{
    LinkConfig, SimConfig, SimError, SimNet, SimStop, SimStream, SimUdp, SimWorld,
};
use ringcast_hal::{
    Clock, Error, ErrorKind, Membership, MulticastInterface, Net, Region, TcpListener, TcpStream,
    UdpSocket,
};

const SERVER: [u8; 4] = [10, 0, 0, 1];
const CLIENT: [u8; 4] = [10, 0, 0, 2];
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);

fn address(text: &str) -> SocketAddr {
    text.parse().expect("a literal address")
}

fn membership(group: Ipv4Addr) -> Membership {
    Membership::V4 {
        group,
        source: None,
        interface: MulticastInterface::Any,
    }
}

/// A world of two hosts with a 5 ms link between them.
fn two_hosts(seed: u64) -> (SimWorld, SimNet, SimNet) {
    let config = SimConfig {
        link: LinkConfig::with_latency_ms(5),
        ..SimConfig::default()
    };
    let world = SimWorld::with_config(seed, config);
    let server = world.host(SERVER);
    let client = world.host(CLIENT);
    (world, server, client)
}

async fn read_some(stream: &mut SimStream, buffer: &mut [u8]) -> Result<usize, SimError> {
    loop {
        match stream.read(buffer) {
            Err(error) if error.is_would_block() => stream.readable().await?,
            outcome => return outcome,
        }
    }
}

async fn write_all(stream: &mut SimStream, mut bytes: &[u8]) -> Result<(), SimError> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(count) => bytes = &bytes[count..],
            Err(error) if error.is_would_block() => stream.writable().await?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn read_to_end(stream: &mut SimStream) -> Result<Vec<u8>, SimError> {
    let mut all = Vec::new();
    let mut buffer = [0; 1500];
    loop {
        match read_some(stream, &mut buffer).await? {
            0 => return Ok(all),
            count => all.extend_from_slice(&buffer[..count]),
        }
    }
}

/// Connects and waits for the handshake; the stream is then writable.
async fn connect(net: &SimNet, target: SocketAddr) -> Result<SimStream, SimError> {
    let stream = net.tcp_connect(target)?;
    stream.writable().await?;
    net.connect_result(&stream)?;
    Ok(stream)
}

async fn accept(listener: &impl TcpListener<Stream = SimStream>) -> SimStream {
    loop {
        listener
            .readable()
            .await
            .expect("the simulation never fails a wait");
        if let Ok((stream, _)) = listener.accept() {
            return stream;
        }
    }
}

#[test]
fn tcp_echo_round_trip_takes_two_round_trips() {
    let (world, server, client) = two_hosts(1);
    let listener = server
        .tcp_listen(address("0.0.0.0:8000"), 4)
        .expect("port is free");
    let echo = async {
        let mut stream = accept(&listener).await;
        let mut buffer = [0; 64];
        let count = read_some(&mut stream, &mut buffer).await.expect("data");
        write_all(&mut stream, &buffer[..count])
            .await
            .expect("room");
        stream
    };
    let ask = async {
        let mut stream = connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening");
        assert_eq!(world.now_ms(), 10, "SYN and SYN-ACK take one latency each");
        write_all(&mut stream, b"hello").await.expect("room");
        let mut buffer = [0; 64];
        let count = read_some(&mut stream, &mut buffer).await.expect("echo");
        assert_eq!(&buffer[..count], b"hello");
        stream
    };
    let (accepted, connected) = world.block_on(zip(echo, ask));
    assert_eq!(world.now_ms(), 20);
    assert_eq!(accepted.peer_addr(), connected.local_addr());
    assert_eq!(connected.peer_addr(), Ok(address("10.0.0.1:8000")));
    assert_eq!(accepted.local_addr(), Ok(address("10.0.0.1:8000")));
    assert_eq!(world.stats().tcp_bytes_delivered, 10);
}

#[test]
fn bounded_buffer_blocks_the_writer_until_the_reader_reads() {
    let (world, server, client) = two_hosts(2);
    let listener = server
        .tcp_listen(address("10.0.0.1:8000"), 4)
        .expect("port is free");
    let (mut reader, mut writer) = world.block_on(zip(accept(&listener), async {
        connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening")
    }));
    writer.set_send_buffer_bytes(4096).expect("a live stream");
    let payload: Vec<u8> = (0..10_000u32).map(|index| index as u8).collect();
    assert_eq!(writer.write(&payload), Ok(4096));
    assert_eq!(writer.write(&payload[4096..]), Err(SimError::WouldBlock));

    // Time passes, the bytes arrive, but nobody reads: still no room.
    world.advance_by(1_000);
    assert_eq!(writer.write(&payload[4096..]), Err(SimError::WouldBlock));
    assert_eq!(world.block_on(poll_once(writer.writable())), None);

    let mut buffer = [0; 1000];
    assert_eq!(reader.read(&mut buffer), Ok(1000));
    assert_eq!(world.block_on(poll_once(writer.writable())), Some(Ok(())));
    assert_eq!(writer.write(&payload[4096..]), Ok(1000));

    // Drain the rest: the writer finishes, closes, and the reader sees it all.
    let send = async move {
        write_all(&mut writer, &payload[5096..])
            .await
            .expect("room comes back");
    };
    let receive = async { read_to_end(&mut reader).await.expect("clean end") };
    let ((), received) = world.block_on(zip(send, receive));
    let expected: Vec<u8> = (1000..10_000u32).map(|index| index as u8).collect();
    assert_eq!(
        &buffer[..],
        &(0..1000u32).map(|index| index as u8).collect::<Vec<_>>()[..]
    );
    assert_eq!(received, expected);
}

#[test]
fn write_vectored_and_send_region_copy_the_bytes() {
    let (world, server, client) = two_hosts(3);
    let listener = server
        .tcp_listen(address("10.0.0.1:8000"), 4)
        .expect("port is free");
    let (mut reader, mut writer) = world.block_on(zip(accept(&listener), async {
        connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening")
    }));
    let mut region = client.region(16).expect("non-empty");
    region.as_mut_slice().copy_from_slice(b"0123456789abcdef");
    let slices = [IoSlice::new(b"head "), IoSlice::new(b"body ")];
    assert_eq!(writer.write_vectored(&slices), Ok(10));
    assert_eq!(writer.send_region(&region, 10, 6), Ok(6));
    assert_eq!(
        writer.send_region(&region, 12, 6),
        Err(SimError::InvalidInput)
    );
    drop(writer);
    let received = world.block_on(read_to_end(&mut reader)).expect("clean end");
    assert_eq!(received, b"head body abcdef");
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let (world, _server, client) = two_hosts(4);
    let stream = client.tcp_connect(address("10.0.0.1:9")).expect("started");
    assert_eq!(client.connect_result(&stream), Err(SimError::WouldBlock));
    world
        .block_on(stream.writable())
        .expect("the simulation never fails a wait");
    assert_eq!(world.now_ms(), 10);
    let outcome = client.connect_result(&stream);
    assert_eq!(
        outcome.map_err(|error| error.kind()),
        Err(ErrorKind::ConnectionRefused)
    );

    let nowhere = client
        .tcp_connect(address("192.0.2.1:80"))
        .expect("started");
    world
        .block_on(nowhere.writable())
        .expect("the simulation never fails a wait");
    assert_eq!(
        client.connect_result(&nowhere),
        Err(SimError::HostUnreachable)
    );
}

#[test]
fn listen_refuses_a_taken_port_and_a_foreign_address() {
    let (_world, server, _client) = two_hosts(5);
    let _first = server
        .tcp_listen(address("0.0.0.0:8000"), 4)
        .expect("port is free");
    let second = server.tcp_listen(address("10.0.0.1:8000"), 4);
    assert_eq!(
        second.map_err(|error| error.kind()).err(),
        Some(ErrorKind::AddrInUse)
    );
    let foreign = server.tcp_listen(address("10.0.0.9:8001"), 4);
    assert_eq!(foreign.err(), Some(SimError::AddrNotAvailable));
    let any = server
        .tcp_listen(address("0.0.0.0:0"), 4)
        .expect("an ephemeral port");
    assert_ne!(any.local_addr().expect("bound").port(), 0);
}

#[test]
fn closing_with_unread_data_resets_the_peer() {
    let (world, server, client) = two_hosts(6);
    let listener = server
        .tcp_listen(address("10.0.0.1:8000"), 4)
        .expect("port is free");
    let (accepted, mut writer) = world.block_on(zip(accept(&listener), async {
        connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening")
    }));
    assert_eq!(writer.write(b"never read"), Ok(10));
    world.advance_by(5);
    drop(accepted);
    world
        .block_on(writer.readable())
        .expect("the simulation never fails a wait");
    let mut buffer = [0; 8];
    assert_eq!(
        writer.read(&mut buffer).map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionReset)
    );
    assert_eq!(writer.read(&mut buffer), Ok(0));
    assert_eq!(
        writer.write(b"more").map_err(|e| e.kind()),
        Err(ErrorKind::BrokenPipe)
    );
}

#[test]
fn abort_resets_and_a_clean_close_is_end_of_stream() {
    let (world, server, client) = two_hosts(7);
    let listener = server
        .tcp_listen(address("10.0.0.1:8000"), 4)
        .expect("port is free");
    let (mut first, aborted) = world.block_on(zip(accept(&listener), async {
        connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening")
    }));
    aborted.abort();
    let mut buffer = [0; 8];
    let outcome = world.block_on(read_some(&mut first, &mut buffer));
    assert_eq!(outcome, Err(SimError::ConnectionReset));

    let (mut second, closed) = world.block_on(zip(accept(&listener), async {
        connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening")
    }));
    drop(closed);
    assert_eq!(world.block_on(read_some(&mut second, &mut buffer)), Ok(0));
    // Writing into a connection the peer has left earns a reset.
    assert_eq!(second.write(b"late"), Ok(4));
    let late = async {
        loop {
            second.writable().await?;
            second.write(b"x")?;
            world.clock().sleep_ms(1).await;
        }
    };
    let outcome: Result<(), SimError> = world.block_on(late);
    assert_eq!(outcome, Err(SimError::ConnectionReset));
}

#[test]
fn dropping_a_listener_resets_connections_never_accepted() {
    let (world, server, client) = two_hosts(8);
    let listener = server
        .tcp_listen(address("10.0.0.1:8000"), 4)
        .expect("port is free");
    let mut stream = world
        .block_on(connect(&client, address("10.0.0.1:8000")))
        .expect("listening");
    drop(listener);
    let mut buffer = [0; 8];
    let outcome = world.block_on(read_some(&mut stream, &mut buffer));
    assert_eq!(outcome, Err(SimError::ConnectionReset));
}

fn bind_member(net: &SimNet, port: u16, group: Option<Ipv4Addr>) -> SimUdp {
    let socket = net
        .udp_bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .expect("port is shareable");
    if let Some(group) = group {
        socket.join(&membership(group)).expect("a multicast group");
    }
    socket
}

fn receive(socket: &SimUdp) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buffer = [0; 2048];
    match socket.recv_from(&mut buffer) {
        Ok((count, from)) => Some((buffer[..count].to_vec(), from)),
        Err(error) => {
            assert!(error.is_would_block(), "unexpected {error}");
            None
        }
    }
}

#[test]
fn multicast_reaches_every_member_and_no_one_else() {
    let world = SimWorld::new(9);
    let sender = world
        .host([10, 0, 0, 1])
        .udp_bind(address("0.0.0.0:0"))
        .expect("bound");
    let member_b = bind_member(&world.host([10, 0, 0, 2]), 5000, Some(GROUP));
    let member_c = bind_member(&world.host([10, 0, 0, 3]), 5000, Some(GROUP));
    let outsider = bind_member(&world.host([10, 0, 0, 4]), 5000, None);
    let other_port = bind_member(&world.host([10, 0, 0, 5]), 5001, Some(GROUP));

    let target = SocketAddr::from((GROUP, 5000));
    assert_eq!(sender.send_to(b"frame 1", target), Ok(7));
    assert_eq!(receive(&member_b), None, "latency has not passed yet");
    assert_eq!(world.next_event_ms(), Some(1));
    world.advance_to(1);
    let from = sender.local_addr().expect("bound");
    let from = SocketAddr::new([10, 0, 0, 1].into(), from.port());
    assert_eq!(receive(&member_b), Some((b"frame 1".to_vec(), from)));
    assert_eq!(receive(&member_c), Some((b"frame 1".to_vec(), from)));
    assert_eq!(receive(&outsider), None);
    assert_eq!(receive(&other_port), None);

    member_b.leave(&membership(GROUP)).expect("was a member");
    assert_eq!(
        member_b.leave(&membership(GROUP)),
        Err(SimError::AddrNotAvailable)
    );
    sender.send_to(b"frame 2", target).expect("sent");
    world.advance_by(10);
    assert_eq!(receive(&member_b), None, "left the group");
    assert_eq!(
        receive(&member_c).map(|(bytes, _)| bytes),
        Some(b"frame 2".to_vec())
    );
    assert_eq!(world.next_event_ms(), None);
}

#[test]
fn udp_unicast_waits_for_readable_and_respects_upload_rate() {
    let world = SimWorld::new(10);
    world.set_link(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        LinkConfig::with_latency_ms(20),
    );
    world.set_upload_rate([10, 0, 0, 1], Some(1_000));
    let sender = world
        .host([10, 0, 0, 1])
        .udp_bind(address("10.0.0.1:4000"))
        .expect("bound");
    let receiver = world
        .host([10, 0, 0, 2])
        .udp_bind(address("0.0.0.0:4001"))
        .expect("bound");
    sender
        .send_to(&[7; 500], address("10.0.0.2:4001"))
        .expect("sent");
    sender
        .send_to(&[8; 500], address("10.0.0.2:4001"))
        .expect("sent");
    world
        .block_on(receiver.readable())
        .expect("the simulation never fails a wait");
    // 500 bytes at 1000 B/s leave after 500 ms, then 20 ms on the link.
    assert_eq!(world.now_ms(), 520);
    assert_eq!(receive(&receiver).map(|(bytes, _)| bytes.len()), Some(500));
    world
        .block_on(receiver.readable())
        .expect("the simulation never fails a wait");
    assert_eq!(world.now_ms(), 1_020);
    assert_eq!(
        world
            .host_stats([10, 0, 0, 1])
            .map(|stats| stats.bytes_sent),
        Some(1_000)
    );
}

#[test]
fn a_full_receive_buffer_drops_datagrams() {
    let world = SimWorld::new(11);
    let net = world.host([10, 0, 0, 1]);
    let sender = net.udp_bind(address("0.0.0.0:0")).expect("bound");
    let receiver = net.udp_bind(address("0.0.0.0:4001")).expect("bound");
    receiver
        .set_receive_buffer_bytes(1_000)
        .expect("a live socket");
    for _ in 0..3 {
        sender
            .send_to(&[1; 400], address("10.0.0.1:4001"))
            .expect("sent");
    }
    world.advance_by(1);
    assert!(receive(&receiver).is_some());
    assert!(receive(&receiver).is_some());
    assert_eq!(receive(&receiver), None);
    assert_eq!(world.stats().udp_dropped_full, 1);
}

#[test]
fn sleeps_wake_in_deadline_order() {
    let world = SimWorld::new(12);
    let clock = world.clock();
    let log = RefCell::new(Vec::new());
    let sleeper = |duration_ms: u64| {
        let (clock, log) = (&clock, &log);
        async move {
            clock.sleep_until(duration_ms).await;
            log.borrow_mut().push((duration_ms, clock.now_ms()));
        }
    };
    world.block_on(zip(
        zip(sleeper(30), sleeper(10)),
        zip(sleeper(20), sleeper(10)),
    ));
    assert_eq!(*log.borrow(), [(10, 10), (10, 10), (20, 20), (30, 30)]);
    // A deadline in the past is already due.
    assert_eq!(world.block_on(poll_once(clock.sleep_until(5))), Some(()));
}

#[test]
fn stepping_by_hand_sees_each_moment() {
    let world = SimWorld::new(13);
    let clock = world.clock();
    let mut late = Box::pin(clock.sleep_until(50));
    let mut early = Box::pin(clock.sleep_until(20));
    assert_eq!(world.block_on(poll_once(late.as_mut())), None);
    assert_eq!(world.block_on(poll_once(early.as_mut())), None);
    assert_eq!(world.next_event_ms(), Some(20));
    world.advance_to(20);
    assert_eq!(world.block_on(poll_once(early.as_mut())), Some(()));
    assert_eq!(world.next_event_ms(), Some(50));
    drop(late);
    assert_eq!(world.next_event_ms(), None, "a dropped sleep is forgotten");
}

#[test]
fn run_until_stops_a_future_that_never_ends() {
    let world = SimWorld::new(14);
    let clock = world.clock();
    let ticks = RefCell::new(0u32);
    let forever = async {
        loop {
            clock.sleep_ms(100).await;
            *ticks.borrow_mut() += 1;
        }
    };
    assert_eq!(world.run_until(forever, 1_050), None::<()>);
    assert_eq!(world.now_ms(), 1_050);
    assert_eq!(*ticks.borrow(), 10);
}

#[test]
#[should_panic(expected = "deadlocked")]
fn block_on_reports_a_deadlock() {
    let world = SimWorld::new(15);
    let socket = world
        .host([10, 0, 0, 1])
        .udp_bind(address("0.0.0.0:4000"))
        .expect("bound");
    let _ = world.block_on(socket.readable());
}

/// Which of 200 multicast datagrams a member receives over a lossy link.
fn loss_pattern(seed: u64) -> Vec<bool> {
    let world = SimWorld::new(seed);
    let lossy = LinkConfig {
        latency_ms: 3,
        loss_parts_per_million: 300_000,
    };
    world.set_link([10, 0, 0, 1], [10, 0, 0, 2], lossy);
    let sender = world
        .host([10, 0, 0, 1])
        .udp_bind(address("0.0.0.0:0"))
        .expect("bound");
    let member = bind_member(&world.host([10, 0, 0, 2]), 5000, Some(GROUP));
    (0..200u8)
        .map(|index| {
            sender
                .send_to(&[index], SocketAddr::from((GROUP, 5000)))
                .expect("sent");
            world.advance_by(3);
            receive(&member).is_some()
        })
        .collect()
}

#[test]
fn the_same_seed_loses_the_same_datagrams() {
    let first = loss_pattern(77);
    assert_eq!(first, loss_pattern(77));
    assert_ne!(first, loss_pattern(78));
    let delivered = first.iter().filter(|delivered| **delivered).count();
    assert!(
        (100..180).contains(&delivered),
        "about 70% arrive, got {delivered}"
    );
}

#[test]
fn interfaces_and_membership_checks() {
    let world = SimWorld::new(16);
    let net = world.host([10, 0, 0, 1]);
    assert_eq!(net.interface_index("eth0"), Ok(2));
    assert_eq!(
        net.interface_index("nope").map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    );
    let socket = net.udp_bind(address("0.0.0.0:5000")).expect("bound");
    let on_eth0 = Membership::V4 {
        group: GROUP,
        source: Some(Ipv4Addr::new(10, 0, 0, 9)),
        interface: MulticastInterface::Index(2),
    };
    socket.join(&on_eth0).expect("a known interface");
    assert_eq!(socket.join(&on_eth0), Err(SimError::AddrInUse));
    let unicast = membership(Ipv4Addr::new(10, 0, 0, 7));
    assert_eq!(socket.join(&unicast), Err(SimError::InvalidInput));
    let foreign = MulticastInterface::Address(Ipv4Addr::new(10, 9, 9, 9));
    assert_eq!(
        socket.set_multicast_interface(foreign),
        Err(SimError::AddrNotAvailable)
    );
    assert_eq!(socket.set_multicast_ttl(4), Ok(()));
    // Source-specific: only 10.0.0.9 gets through.
    let other = world
        .host([10, 0, 0, 8])
        .udp_bind(address("0.0.0.0:0"))
        .expect("bound");
    other
        .send_to(b"x", SocketAddr::from((GROUP, 5000)))
        .expect("sent");
    let wanted = world
        .host([10, 0, 0, 9])
        .udp_bind(address("0.0.0.0:0"))
        .expect("bound");
    wanted
        .send_to(b"y", SocketAddr::from((GROUP, 5000)))
        .expect("sent");
    world.advance_by(5);
    assert_eq!(
        receive(&socket).map(|(bytes, _)| bytes),
        Some(b"y".to_vec())
    );
    assert_eq!(receive(&socket), None);
}

#[test]
fn the_daemon_executor_runs_in_virtual_time() {
    let (world, server, client) = two_hosts(17);
    let listener = server
        .tcp_listen(address("10.0.0.1:8000"), 4)
        .expect("port is free");
    let mut executor = Executor::new(4);
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let spawned = executor.try_spawn(async move {
        let mut stream = accept(&listener).await;
        let mut buffer = [0; 64];
        let count = read_some(&mut stream, &mut buffer).await.expect("data");
        write_all(&mut stream, &buffer[..count])
            .await
            .expect("room");
    });
    assert!(spawned.is_ok());
    let (log, clock) = (echoed.clone(), world.clock());
    let spawned = executor.try_spawn(async move {
        clock.sleep_until(100).await;
        let mut stream = connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening");
        write_all(&mut stream, b"ping").await.expect("room");
        let mut buffer = [0; 64];
        let count = read_some(&mut stream, &mut buffer).await.expect("echo");
        log.borrow_mut().extend_from_slice(&buffer[..count]);
    });
    assert!(spawned.is_ok());
    assert_eq!(
        world.run_executor(&mut executor, u64::MAX),
        SimStop::Finished
    );
    assert_eq!(world.now_ms(), 120);
    assert_eq!(*echoed.borrow(), b"ping");

    let clock = world.clock();
    let spawned = executor.try_spawn(async move {
        loop {
            clock.sleep_ms(7).await;
        }
    });
    assert!(spawned.is_ok());
    assert_eq!(
        world.run_executor(&mut executor, 500),
        SimStop::DeadlineReached
    );
    assert_eq!(world.now_ms(), 500);
}

#[test]
fn a_hand_written_loop_steps_through_events() {
    let world = SimWorld::new(18);
    let sender = world
        .host([10, 0, 0, 1])
        .udp_bind(address("0.0.0.0:0"))
        .expect("bound");
    let receiver = world
        .host([10, 0, 0, 2])
        .udp_bind(address("0.0.0.0:4001"))
        .expect("bound");
    sender
        .send_to(b"a", address("10.0.0.2:4001"))
        .expect("sent");
    let _timer = world.clock().sleep_ms(3);
    let mut sleep = Box::pin(world.clock().sleep_ms(3));
    assert_eq!(world.block_on(poll_once(sleep.as_mut())), None);
    assert_eq!(world.step(), Some(1));
    assert!(receive(&receiver).is_some());
    assert_eq!(world.step(), Some(3));
    assert_eq!(world.block_on(poll_once(sleep.as_mut())), Some(()));
    assert_eq!(world.step(), None);
}

/// Counts this thread's allocations while `COUNTING` is set, so tests on
/// other threads do not disturb the count.
mod allocations {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::Cell;
    use std::alloc::System;

    thread_local! {
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: forwards to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNTING.try_with(|counting| {
                if counting.get() {
                    let _ = COUNT.try_with(|count| count.set(count.get() + 1));
                }
            });
            // SAFETY: the caller upholds `alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
            // SAFETY: the caller upholds `dealloc`'s contract.
            unsafe { System.dealloc(pointer, layout) }
        }
    }

    /// Runs `f` and returns how many allocations it made on this thread.
    pub fn count(f: impl FnOnce()) -> usize {
        COUNT.with(|count| count.set(0));
        COUNTING.with(|counting| counting.set(true));
        f();
        COUNTING.with(|counting| counting.set(false));
        COUNT.with(|count| count.get())
    }
}

#[global_allocator]
static ALLOCATOR: allocations::Counting = allocations::Counting;

/// Moves `bytes` from `writer` to `reader` in TS-sized writes, with a
/// multicast datagram and a sleep per write, as a relay's steady state does.
fn pump(world: &SimWorld, pair: &mut (SimStream, SimStream), udp: &(SimUdp, SimUdp), bytes: usize) {
    let (reader, writer) = pair;
    let (sender, member) = udp;
    let clock = world.clock();
    let send = async {
        let chunk = [0x47; 1316];
        let mut left = bytes;
        while left > 0 {
            let count = left.min(chunk.len());
            write_all(writer, &chunk[..count]).await.expect("room");
            sender
                .send_to(&chunk, SocketAddr::from((GROUP, 5000)))
                .expect("sent");
            clock.sleep_ms(1).await;
            left -= count;
        }
    };
    let receive = async {
        let mut buffer = [0; 4096];
        let mut left = bytes;
        while left > 0 {
            left -= read_some(reader, &mut buffer).await.expect("data");
            while let Ok((_, _)) = member.recv_from(&mut buffer) {}
        }
    };
    world.block_on(zip(send, receive));
}

#[test]
fn steady_state_traffic_allocates_nothing() {
    let (world, server, client) = two_hosts(19);
    let listener = server
        .tcp_listen(address("10.0.0.1:8000"), 4)
        .expect("port is free");
    let mut pair = world.block_on(zip(accept(&listener), async {
        connect(&client, address("10.0.0.1:8000"))
            .await
            .expect("listening")
    }));
    let sender = client.udp_bind(address("0.0.0.0:0")).expect("bound");
    let member = bind_member(&server, 5000, Some(GROUP));
    let udp = (sender, member);
    pump(&world, &mut pair, &udp, 256 * 1024);
    let allocations = allocations::count(|| pump(&world, &mut pair, &udp, 1024 * 1024));
    assert_eq!(allocations, 0, "allocations per relayed megabyte");
}
