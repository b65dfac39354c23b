//! Writes the seed corpora of every fuzz target from real messages, frames
//! and control messages, and the dictionaries.
//!
//! ```text
//! cargo run --example seeds              # into fuzz/corpus/<target>/
//! cargo run --example seeds -- seeds     # into fuzz/seeds/<target>/ (committed)
//! ```
//!
//! Dictionaries always go to fuzz/dict/<target>.dict. Paths are relative to
//! the fuzz crate, wherever this runs from.

use ferry_fuzz::dispatch::{self, Fd, Limits, mode};
use ferry_fuzz::proto::*;
use ferry_fuzz::ring_consumer::{self, Op, Positions, Setup};
use ferry_fuzz::{control, frame_header, message};
use ferry_handoff::{ConnectFailure, ControlMessage, InstanceId, PeerId};
use ferry_ring::frame::{KIND_DATA, KIND_PADDING, encode_header, max_payload};
use ferry_ring::{HEADER_SIZE, MAGIC, Producer, Region, init, ring_size};
use ferry_transport::rkyv::{self, rancor};
use ferry_transport::wire::encode_out_of_line_body;
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope, Flags};
use ferry_transport::{
    Connection, ConnectionConfig, ENDPOINT_FDS, Message, Receiver, Remote, schema_of,
};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let mut seeds = Seeds::new(out);
    frame_header_seeds(&mut seeds);
    message_seeds(&mut seeds);
    control_seeds(&mut seeds);
    ring_consumer_seeds(&mut seeds);
    dispatch_seeds(&mut seeds);
    write_dictionaries(&root.join("dict"));
    println!("wrote {} seeds under {}", seeds.count, seeds.out.display());
}

struct Seeds {
    out: PathBuf,
    count: usize,
}

impl Seeds {
    fn new(out: PathBuf) -> Self {
        Seeds { out, count: 0 }
    }

    /// Writes one seed, after checking that its harness accepts it.
    fn add(&mut self, target: &str, name: &str, bytes: Vec<u8>) {
        match target {
            "frame_header" => frame_header::run(&bytes),
            "message" => message::run(&bytes),
            "control" => control::run(&bytes),
            "ring_consumer" => println!(
                "ring_consumer/{name}: {:?}",
                ring_consumer::run_report(&bytes)
            ),
            "dispatch" => println!("dispatch/{name}: {:?}", dispatch::run_report(&bytes)),
            other => panic!("unknown target {other}"),
        }
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
        self.count += 1;
    }
}

fn archive<T: ferry_transport::Archivable>(value: &T) -> Vec<u8> {
    rkyv::to_bytes::<rancor::Error>(value)
        .expect("serialize")
        .to_vec()
}

fn frame_header_seeds(seeds: &mut Seeds) {
    // Headers as a real producer writes them in a ring of 1 KiB.
    let cap = 1024;
    let cases = [
        ("data_empty", encode_header(0, KIND_DATA), 0, 16),
        ("data_100", encode_header(100, KIND_DATA), 0, 128),
        (
            "data_max",
            encode_header(max_payload(cap) as u32, KIND_DATA),
            512,
            512,
        ),
        ("data_late", encode_header(32, KIND_DATA), 960, 64),
        ("padding", encode_header(48, KIND_PADDING), 960, 64),
        ("data_beyond_tail", encode_header(100, KIND_DATA), 0, 112),
        ("padding_short", encode_header(32, KIND_PADDING), 960, 64),
        ("unknown_kind", encode_header(16, 7), 0, 1024),
    ];
    for (name, word, index, available) in cases {
        seeds.add(
            "frame_header",
            name,
            frame_header::encode(word, index, available, cap),
        );
    }
    seeds.add(
        "frame_header",
        "large_ring",
        frame_header::encode(encode_header(1 << 20, KIND_DATA), 1 << 24, 1 << 22, 1 << 30),
    );
}

fn sample_publish() -> Publish {
    Publish {
        entries: (0..4).map(sample_entry).collect(),
        origin: Some("https://example.org".into()),
        version: 3,
    }
}

/// A connection pair of the dispatch target's shape, and real frames.
fn pair() -> (Connection, Connection) {
    let config = ConnectionConfig::default()
        .schema(SCHEMA)
        .ring_capacity(dispatch::RING_CAPACITY);
    Connection::pair(config).expect("pair")
}

/// The next frame `b` received, as the bytes that were in the ring.
fn capture(b: &mut Connection) -> Vec<u8> {
    let mut frame = b.try_recv_frame().expect("a frame");
    drop(frame.take_fds());
    let mut bytes = vec![0u8; ENVELOPE_SIZE];
    frame.envelope().write_to(&mut bytes);
    bytes.extend_from_slice(frame.bytes());
    bytes
}

fn message_seeds(seeds: &mut Seeds) {
    use message::Kind;
    let (mut a, mut b) = pair();
    let network = Remote::<NetworkConnection>::new(0);
    a.send(
        network,
        &LoadResource {
            request_id: 7,
            url: "https://example.org/".into(),
        },
    )
    .unwrap();
    let envelope = capture(&mut b);
    seeds.add(
        "message",
        "envelope_typed",
        message::encode(Kind::Envelope, &[&[4u8][..], &envelope].concat()),
    );
    a.send_with_reply(
        network,
        &GetCookies {
            host: "example.org".into(),
        },
        |_, _| {},
    )
    .unwrap();
    let request = capture(&mut b);
    seeds.add(
        "message",
        "envelope_request",
        message::encode(
            Kind::Envelope,
            &[&[4u8][..], &request[..ENVELOPE_SIZE]].concat(),
        ),
    );
    a.send_frame(b"raw bytes", Some(Duration::from_secs(1)))
        .unwrap();
    let raw = capture(&mut b);
    seeds.add(
        "message",
        "envelope_raw",
        message::encode(Kind::Envelope, &[&[4u8][..], &raw].concat()),
    );
    let reply = Envelope {
        flags: Flags(Flags::REPLY | Flags::OUT_OF_LINE),
        fd_count: 2,
        ..Envelope::decode(&request, 4).unwrap()
    };
    let mut bytes = vec![4u8; 1 + ENVELOPE_SIZE];
    reply.write_to(&mut bytes[1..]);
    seeds.add(
        "message",
        "envelope_reply_blob",
        message::encode(Kind::Envelope, &bytes),
    );

    let (_creator, endpoint) =
        Connection::create(ConnectionConfig::default().schema(SCHEMA)).unwrap();
    seeds.add(
        "message",
        "endpoint",
        message::encode(
            Kind::EndpointInfo,
            &[&[ENDPOINT_FDS as u8][..], &endpoint.metadata].concat(),
        ),
    );
    let mut header = b"FERRYFDS".to_vec();
    header.extend_from_slice(&1u64.to_le_bytes());
    seeds.add(
        "message",
        "attachment",
        message::encode(Kind::Attachment, &header),
    );
    seeds.add(
        "message",
        "out_of_line_body",
        message::encode(Kind::OutOfLineBody, &encode_out_of_line_body(1 << 20)),
    );
    let mut request = b"FERRYRQ1".to_vec();
    request.extend_from_slice(&SCHEMA.to_le_bytes());
    seeds.add(
        "message",
        "request",
        message::encode(Kind::Request, &request),
    );

    let load = LoadResource {
        request_id: 42,
        url: "https://example.org/index.html".into(),
    };
    seeds.add(
        "message",
        "load_resource",
        message::encode(Kind::LoadResource, &archive(&load)),
    );
    let get = GetCookies {
        host: "example.org".into(),
    };
    seeds.add(
        "message",
        "get_cookies",
        message::encode(Kind::GetCookies, &archive(&get)),
    );
    let cookies = Cookies {
        cookies: vec!["a=1".into(), "session=0123456789abcdef0123".into()],
    };
    seeds.add(
        "message",
        "cookies",
        message::encode(Kind::Cookies, &archive(&cookies)),
    );
    let set = SetCookie {
        host: "example.org".into(),
        cookie: "theme=dark; Path=/".into(),
    };
    seeds.add(
        "message",
        "set_cookie",
        message::encode(Kind::SetCookie, &archive(&set)),
    );
    seeds.add(
        "message",
        "publish",
        message::encode(Kind::Publish, &archive(&sample_publish())),
    );
    let lookup = Lookup {
        names: vec!["entry-1".into(), "entry-2".into()],
        limit: Some(5),
    };
    seeds.add(
        "message",
        "lookup",
        message::encode(Kind::Lookup, &archive(&lookup)),
    );
    let found = Found {
        entries: vec![sample_entry(2), sample_entry(4)],
    };
    seeds.add(
        "message",
        "found",
        message::encode(Kind::Found, &archive(&found)),
    );
}

fn control_seeds(seeds: &mut Seeds) {
    let network = PeerId {
        service: "network".into(),
        instance: InstanceId(2),
    };
    let webcontent = PeerId {
        service: "webcontent".into(),
        instance: InstanceId(5),
    };
    let mut request = b"FERRYRQ1".to_vec();
    request.extend_from_slice(&SCHEMA.to_le_bytes());
    let (_creator, endpoint) =
        Connection::create(ConnectionConfig::default().schema(SCHEMA)).unwrap();
    let cases = [
        (
            "hello",
            ControlMessage::Hello {
                you: webcontent.clone(),
            },
            0,
        ),
        (
            "connect",
            ControlMessage::Connect {
                request: 1,
                service: "network".into(),
                metadata: request.clone(),
            },
            0,
        ),
        (
            "create_connection",
            ControlMessage::CreateConnection {
                request: 9,
                requester: webcontent.clone(),
                metadata: request,
            },
            0,
        ),
        (
            "connection_created",
            ControlMessage::ConnectionCreated {
                request: 9,
                metadata: endpoint.metadata.clone(),
            },
            ENDPOINT_FDS,
        ),
        (
            "create_failed",
            ControlMessage::CreateFailed {
                request: 9,
                reason: "schema mismatch".into(),
            },
            0,
        ),
        (
            "connected",
            ControlMessage::Connected {
                request: 1,
                peer: network.clone(),
                metadata: endpoint.metadata.clone(),
            },
            ENDPOINT_FDS,
        ),
        (
            "connect_failed_target",
            ControlMessage::ConnectFailed {
                request: 1,
                failure: ConnectFailure::TargetFailed("no".into()),
            },
            0,
        ),
        (
            "connect_failed_busy",
            ControlMessage::ConnectFailed {
                request: 1,
                failure: ConnectFailure::Busy,
            },
            0,
        ),
        (
            "connect_failed_target_busy",
            ControlMessage::ConnectFailed {
                request: 1,
                failure: ConnectFailure::TargetBusy,
            },
            0,
        ),
        (
            "connect_failed_unknown",
            ControlMessage::ConnectFailed {
                request: 2,
                failure: ConnectFailure::UnknownService,
            },
            0,
        ),
        (
            "connect_failed_gone",
            ControlMessage::ConnectFailed {
                request: 3,
                failure: ConnectFailure::TargetGone,
            },
            0,
        ),
        (
            "connect_failed_timed_out",
            ControlMessage::ConnectFailed {
                request: 4,
                failure: ConnectFailure::TimedOut,
            },
            0,
        ),
        ("denied", ControlMessage::Denied { request: 3 }, 0),
        (
            "report",
            ControlMessage::Report {
                peer: network.clone(),
                reason: "sent a frame that is no message".into(),
            },
            0,
        ),
        ("peer_gone", ControlMessage::PeerGone { peer: network }, 0),
    ];
    for (name, message, fds) in &cases {
        seeds.add("control", name, control::encode(message, *fds));
    }
    // The same messages built from their fields (the encoder's side).
    for (name, message, fds) in &cases {
        seeds.add(
            "control",
            &format!("built_{name}"),
            control::encode_fields(message, *fds as u8),
        );
    }
}

/// The data area and tail of a real ring of `capacity` after a real
/// producer sent `lens` (through a second mapping of its memfd).
fn real_ring(capacity: usize, lens: &[usize]) -> (Vec<u8>, u64) {
    let region = Arc::new(Region::create(ring_size(capacity)).unwrap());
    init(&region, 0, capacity).unwrap();
    let mut producer = Producer::attach(Arc::clone(&region), 0).unwrap();
    for (i, &len) in lens.iter().enumerate() {
        producer.try_send(&vec![i as u8 + 1; len]).unwrap();
    }
    let file = std::fs::File::from(region.fd().unwrap().try_clone_to_owned().unwrap());
    let map = memmap2::MmapOptions::new()
        .len(ring_size(capacity))
        .map_raw_read_only(&file)
        .unwrap();
    // SAFETY: the mapping covers the whole ring; the producer is idle.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), ring_size(capacity)) };
    let tail = u64::from_le_bytes(bytes[128..136].try_into().unwrap());
    (bytes[HEADER_SIZE..].to_vec(), tail)
}

fn ring_consumer_seeds(seeds: &mut Seeds) {
    let honest = |capacity: u8| Setup {
        capacity,
        ..Setup::default()
    };
    let peek = Op::Peek { action: 0 };
    let send = |len: u16| Op::Send { len, how: 0 };
    let mut add = |name: &str, setup: &Setup, ops: &[Op]| {
        seeds.add("ring_consumer", name, ring_consumer::encode(setup, ops));
    };
    add(
        "send_peek",
        &honest(0),
        &[
            send(5),
            peek.clone(),
            send(0),
            send(100),
            peek.clone(),
            peek.clone(),
            peek.clone(),
        ],
    );
    // Frames of 100 bytes in a 256-byte ring: padding and wrap-around.
    let mut ops = Vec::new();
    for _ in 0..6 {
        ops.extend([send(100), Op::PeekNow]);
    }
    add("wrap", &honest(0), &ops);
    add(
        "batch",
        &honest(1),
        &[
            Op::Send { len: 40, how: 1 },
            Op::Send { len: 40, how: 1 },
            peek.clone(),
            Op::ProducerFlush,
            Op::Peek { action: 1 },
            Op::Peek { action: 1 },
            Op::Flush,
        ],
    );
    add(
        "full_flushes_batch",
        &honest(0),
        &[
            Op::Send { len: 100, how: 1 },
            Op::Send { len: 100, how: 1 },
            send(100),
            Op::RecvInto,
            Op::RecvInto,
        ],
    );
    add(
        "pinned",
        &honest(0),
        &[
            send(50),
            send(50),
            Op::Pin,
            Op::Peek { action: 1 },
            Op::Peek { action: 1 },
            send(100),
            send(100),
            Op::Unpin,
            send(100),
            peek.clone(),
        ],
    );
    add(
        "keep_shrink_abandon",
        &honest(2),
        &[
            Op::Send { len: 300, how: 3 },
            Op::Send { len: 30, how: 2 },
            Op::Peek { action: 2 },
            peek.clone(),
            peek.clone(),
        ],
    );
    add(
        "closed",
        &honest(0),
        &[send(8), Op::DropProducer, peek.clone(), peek.clone()],
    );
    add(
        "disconnect_arm",
        &Setup {
            strategy: 2,
            ..honest(3)
        },
        &[
            Op::Arm { disarm: true },
            send(8),
            Op::Arm { disarm: true },
            Op::Disconnect,
            peek.clone(),
            Op::PeekNow,
            Op::Arm { disarm: false },
        ],
    );
    add(
        "hint_words",
        &Setup {
            strategy: 1,
            closed: Some((0, 0)),
            wake: Some([u32::MAX, 7, 1, 2]),
            ..honest(4)
        },
        &[
            Op::Wake { which: 3, value: 1 },
            send(64),
            Op::Closed { which: 1, value: 1 },
            send(64),
            peek.clone(),
            Op::Closed { which: 0, value: 1 },
            peek.clone(),
        ],
    );
    add(
        "far_positions",
        &Setup {
            positions: Positions::Aligned {
                head16: u32::MAX,
                ahead16: 0,
            },
            ..honest(0)
        },
        &[send(200), peek.clone(), send(200), peek.clone()],
    );
    // A real producer's frames, already published when the consumer attaches.
    let (data, tail) = real_ring(512, &[10, 200, 0, 100]);
    let snapshot = Setup {
        capacity: 1,
        positions: Positions::Aligned {
            head16: 0,
            ahead16: (tail / 16) as u16,
        },
        data: Some(data),
        ..Setup::default()
    };
    add(
        "real_ring",
        &snapshot,
        &[
            peek.clone(),
            peek.clone(),
            Op::Peek { action: 1 },
            Op::PeekNow,
            peek.clone(),
        ],
    );
    // Hostile peers.
    add(
        "bad_magic",
        &Setup {
            magic: Some(!MAGIC),
            ..honest(0)
        },
        &[],
    );
    add(
        "bad_version",
        &Setup {
            version: Some(2),
            ..honest(0)
        },
        &[],
    );
    add(
        "small_capacity",
        &Setup {
            header_capacity: Some(256),
            ..honest(4)
        },
        &[send(100), peek.clone()],
    );
    add(
        "raw_positions",
        &Setup {
            positions: Positions::Raw {
                head: 16,
                tail: 272,
            },
            ..honest(0)
        },
        std::slice::from_ref(&peek),
    );
    add(
        "tail_backwards",
        &honest(0),
        &[
            send(10),
            peek.clone(),
            Op::SetTail(0),
            peek.clone(),
            peek.clone(),
        ],
    );
    add(
        "bad_kind",
        &honest(0),
        &[
            Op::Word {
                index: 0,
                len: 16,
                kind: 7,
            },
            Op::AdvanceTail(32),
            peek.clone(),
            Op::RecvInto,
        ],
    );
    add(
        "long_frame",
        &honest(0),
        &[
            Op::Word {
                index: 0,
                len: 4000,
                kind: 0,
            },
            Op::AdvanceTail(64),
            peek.clone(),
        ],
    );
    add(
        "short_padding",
        &honest(0),
        &[
            Op::Frame { len: 100 },
            Op::Word {
                index: 128,
                len: 8,
                kind: 1,
            },
            Op::AdvanceTail(128),
            peek.clone(),
            peek.clone(),
        ],
    );
    add(
        "peer_frames",
        &honest(1),
        &[
            Op::Frame { len: 100 },
            Op::Frame { len: 300 },
            Op::Frame { len: 0 },
            peek.clone(),
            Op::Bytes {
                index: 16,
                bytes: vec![0xee; 20],
            },
            peek.clone(),
            peek.clone(),
            peek.clone(),
        ],
    );
    add(
        "head_scribble",
        &honest(0),
        &[
            send(100),
            Op::SetHead(4096),
            send(100),
            Op::SetHead(0),
            send(100),
            peek.clone(),
        ],
    );
    add(
        "tail_far_ahead",
        &honest(0),
        &[
            Op::SetTail(1 << 40),
            peek.clone(),
            Op::SetTail(u64::MAX),
            peek.clone(),
        ],
    );
}

#[allow(clippy::too_many_arguments)]
fn typed(
    receiver: u32,
    schema: u32,
    message: u32,
    destination: u64,
    request_id: u64,
    flags: u16,
    fd_count: u16,
    body: &[u8],
) -> Vec<u8> {
    let envelope = Envelope {
        destination,
        request_id,
        receiver,
        schema,
        message,
        flags: Flags(flags),
        fd_count,
    };
    let mut bytes = vec![0u8; ENVELOPE_SIZE];
    envelope.write_to(&mut bytes);
    bytes.extend_from_slice(body);
    bytes
}

fn dispatch_seeds(seeds: &mut Seeds) {
    use dispatch::Op::{Attachment, Frame, Scribble};
    let (mut a, mut b) = pair();
    let network = Remote::<NetworkConnection>::new(0);
    let catalog = Remote::<Catalog>::new(1);
    let mut next = |send: &mut dyn FnMut(&mut Connection)| {
        send(&mut a);
        capture(&mut b)
    };
    let load = next(&mut |a| {
        a.send(
            network,
            &LoadResource {
                request_id: 1,
                url: "https://example.org/".into(),
            },
        )
        .unwrap()
    });
    let reenter = next(&mut |a| {
        a.send(
            network,
            &LoadResource {
                request_id: 2,
                url: "reenter".into(),
            },
        )
        .unwrap()
    });
    let get = next(&mut |a| {
        a.send_with_reply(
            network,
            &GetCookies {
                host: "example.org".into(),
            },
            |_, _| {},
        )
        .unwrap()
    });
    let set = next(&mut |a| {
        a.send(
            network,
            &SetCookie {
                host: "example.org".into(),
                cookie: "a=1".into(),
            },
        )
        .unwrap()
    });
    let set_sync = next(&mut |a| {
        a.send(
            network,
            &SetCookie {
                host: "example.org".into(),
                cookie: "sync".into(),
            },
        )
        .unwrap()
    });
    let publish = next(&mut |a| a.send(catalog, &sample_publish()).unwrap());
    let lookup = next(&mut |a| {
        a.send_with_reply(
            catalog,
            &Lookup {
                names: vec!["x".into()],
                limit: None,
            },
            |_, _| {},
        )
        .unwrap()
    });
    let lookup_sync = next(&mut |a| {
        a.send(
            catalog,
            &Lookup {
                names: vec!["sync".into()],
                limit: Some(1),
            },
        )
        .unwrap()
    });
    let raw = next(&mut |a| a.send_frame(b"raw frame", None).unwrap());
    let event = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let with_fd = next(&mut |a| {
        a.send_with_fds(
            network,
            &SetCookie {
                host: "h".into(),
                cookie: "c".into(),
            },
            &[event.as_fd()],
            None,
        )
        .unwrap()
    });

    let net = (
        <NetworkConnection as Receiver>::ID,
        <NetworkConnection as Receiver>::SCHEMA,
    );
    let cookies = archive(&Cookies {
        cookies: vec!["a=1".into()],
    });
    let reply = |id: u64| {
        typed(
            net.0,
            net.1,
            <GetCookies as Message>::ID,
            0,
            id,
            Flags::REPLY,
            0,
            &cookies,
        )
    };
    let found = archive(&Found {
        entries: vec![sample_entry(3)],
    });

    let mut add = |name: &str, mode: u8, ops: Vec<dispatch::Op>| {
        seeds.add("dispatch", name, dispatch::encode(mode, &ops));
    };
    let all = vec![
        Frame(load.clone()),
        Frame(get.clone()),
        Frame(set.clone()),
        Frame(publish.clone()),
        Frame(lookup.clone()),
    ];
    add("messages_untrusted", 0, all.clone());
    add("messages_trusted", mode::TRUSTED, all);
    add(
        "reentrant",
        mode::TRUSTED,
        vec![
            Frame(reenter.clone()),
            Frame(load.clone()),
            Frame(set.clone()),
            Frame(reenter),
        ],
    );
    add(
        "nested_sync_call",
        0,
        vec![
            Frame(set_sync.clone()),
            Frame(load.clone()),
            Frame(reply(1)),
        ],
    );
    add(
        "reply_handlers",
        2 << mode::HANDLERS_SHIFT,
        vec![
            Frame(reply(2)),
            Frame(load.clone()),
            Frame(reply(1)),
            Frame(reply(1)),
        ],
    );
    add(
        "sync_call",
        mode::SYNC_CALL | mode::TRUSTED | 1 << mode::HANDLERS_SHIFT,
        vec![
            Frame(load.clone()),
            Frame(publish.clone()),
            Frame(reply(1)),
            Frame(reply(2)),
            Frame(set.clone()),
        ],
    );
    add(
        "sync_call_overflow",
        mode::SYNC_CALL | mode::SMALL_DEFERRED,
        vec![
            Frame(publish.clone()),
            Frame(publish.clone()),
            Frame(reply(1)),
        ],
    );
    add(
        "with_fd",
        0,
        vec![
            Attachment {
                header: None,
                fds: vec![Fd::Event],
            },
            Frame(with_fd.clone()),
        ],
    );
    add(
        "with_fd_missing",
        mode::ONE_FD,
        vec![Frame(with_fd.clone()), Frame(load.clone())],
    );
    let blob = archive(&Publish {
        entries: vec![sample_entry(7)],
        origin: None,
        version: 1,
    });
    let catalog_ids = (<Catalog as Receiver>::ID, <Catalog as Receiver>::SCHEMA);
    let out_of_line = typed(
        catalog_ids.0,
        catalog_ids.1,
        <Publish as Message>::ID,
        1,
        0,
        Flags::OUT_OF_LINE,
        1,
        &(blob.len() as u64).to_le_bytes(),
    );
    add(
        "out_of_line",
        mode::TRUSTED,
        vec![
            Attachment {
                header: None,
                fds: vec![Fd::Blob(blob.clone())],
            },
            Frame(out_of_line.clone()),
            Frame(load.clone()),
        ],
    );
    add(
        "out_of_line_unsealed",
        0,
        vec![
            Attachment {
                header: None,
                fds: vec![Fd::Unsealed(blob.len() as u16)],
            },
            Frame(out_of_line.clone()),
        ],
    );
    let found_reply = typed(
        catalog_ids.0,
        catalog_ids.1,
        <Lookup as Message>::ID,
        1,
        1,
        Flags::REPLY,
        0,
        &found,
    );
    add(
        "wrong_reply_type",
        mode::SYNC_CALL,
        vec![Frame(found_reply)],
    );
    add(
        "raw_api",
        mode::RAW_API,
        vec![
            Frame(raw.clone()),
            Attachment {
                header: None,
                fds: vec![Fd::Pipe, Fd::Event],
            },
            Frame(with_fd.clone()),
            Frame(load.clone()),
        ],
    );
    add("raw_in_dispatch", 0, vec![Frame(raw.clone())]);
    add(
        "unknown_destination",
        0,
        vec![Frame(typed(
            net.0,
            net.1,
            <LoadResource as Message>::ID,
            5,
            0,
            0,
            0,
            &archive(&LoadResource {
                request_id: 1,
                url: "u".into(),
            }),
        ))],
    );
    add(
        "schema_mismatch",
        0,
        vec![Frame(typed(
            net.0,
            net.1 ^ 1,
            <LoadResource as Message>::ID,
            0,
            0,
            0,
            0,
            &load[ENVELOPE_SIZE..],
        ))],
    );
    let mut truncated = publish.clone();
    truncated.truncate(truncated.len() - 9);
    add(
        "bad_archive",
        0,
        vec![Frame(load.clone()), Frame(truncated)],
    );
    add(
        "scribbled_ring",
        mode::TRUSTED,
        vec![Frame(load.clone()), Scribble { at: 128, value: 3 }],
    );
    let other_schema = schema_of(&[net.1]);
    assert_ne!(other_schema, SCHEMA);

    // The transport's limits (mode bit 7).
    let roomy = Limits {
        max_sync_nesting: 4,
        max_deferred_bytes: u16::MAX,
        max_deferred_fds: 7,
        max_dispatch_batch: u8::MAX,
        max_pending_replies: 3,
        max_message_size: u16::MAX,
    };
    let mut add = |name: &str, mode: u8, limits: Limits, ops: Vec<dispatch::Op>| {
        seeds.add(
            "dispatch",
            name,
            dispatch::encode_with_limits(mode, Some(limits), &ops),
        );
    };
    // An allowed-while-waiting message whose handler calls back, again and
    // again: calls nest up to the bound, the innermost sets the rest aside.
    add(
        "nesting_bound",
        mode::SYNC_CALL,
        Limits {
            max_sync_nesting: 2,
            ..roomy
        },
        vec![Frame(lookup_sync.clone()); 6],
    );
    add(
        "nesting_in_dispatch",
        0,
        Limits {
            max_sync_nesting: 3,
            ..roomy
        },
        vec![
            Frame(lookup_sync.clone()),
            Frame(lookup_sync.clone()),
            Frame(lookup_sync.clone()),
            Frame(lookup_sync.clone()),
            Frame(reply(2)),
            Frame(lookup_sync.clone()),
        ],
    );
    add(
        "nesting_zero",
        mode::SYNC_CALL,
        Limits {
            max_sync_nesting: 0,
            ..roomy
        },
        vec![
            Frame(lookup_sync.clone()),
            Frame(reply(1)),
            Frame(lookup_sync.clone()),
        ],
    );
    // Synchronous requests whose handler calls back.
    let sync_request = |id: u64| with_header(&set_sync, Flags::SYNC, 0, Some(id));
    add(
        "nesting_sync_requests",
        mode::SYNC_CALL,
        Limits {
            max_sync_nesting: 3,
            ..roomy
        },
        (1..=5).map(|id| Frame(sync_request(id))).collect(),
    );
    // Descriptors arriving while a call waits: set aside until the budget.
    let memfd = || Attachment {
        header: None,
        fds: vec![Fd::Unsealed(64)],
    };
    let mut ops = Vec::new();
    for _ in 0..6 {
        ops.extend([memfd(), Frame(with_fd.clone())]);
    }
    add(
        "set_aside_fds",
        mode::SYNC_CALL | mode::ONE_FD,
        Limits {
            max_deferred_fds: 2,
            ..roomy
        },
        ops.clone(),
    );
    add(
        "set_aside_fds_nested",
        mode::ONE_FD,
        Limits {
            max_deferred_fds: 1,
            ..roomy
        },
        [vec![Frame(lookup_sync.clone())], ops].concat(),
    );
    add(
        "set_aside_bytes",
        mode::SYNC_CALL,
        Limits {
            max_deferred_bytes: 700,
            ..roomy
        },
        vec![Frame(load.clone()); 5],
    );
    // Out-of-line messages while a call waits: each keeps its blob open.
    let mut ops = Vec::new();
    for _ in 0..3 {
        ops.push(Attachment {
            header: None,
            fds: vec![Fd::Blob(blob.clone())],
        });
        ops.push(Frame(out_of_line.clone()));
    }
    add(
        "set_aside_blobs",
        mode::SYNC_CALL | mode::ONE_FD,
        Limits {
            max_deferred_fds: 2,
            ..roomy
        },
        ops,
    );
    // A sender's word against the receiver's declaration.
    let load_lie = with_header(&load, Flags::ALLOWED_WHILE_WAITING, 0, None);
    let lookup_lie = with_header(&lookup_sync, 0, Flags::ALLOWED_WHILE_WAITING, None);
    add(
        "lie_allowed_while_waiting",
        mode::SYNC_CALL,
        roomy,
        vec![Frame(load.clone()), Frame(load_lie.clone())],
    );
    add(
        "lie_not_allowed",
        mode::SYNC_CALL,
        roomy,
        vec![Frame(lookup_lie.clone()), Frame(reply(1))],
    );
    add(
        "lie_in_dispatch",
        0,
        roomy,
        vec![Frame(load.clone()), Frame(lookup_lie), Frame(load_lie)],
    );
    add(
        "small_batch",
        0,
        Limits {
            max_dispatch_batch: 1,
            ..roomy
        },
        vec![Frame(load.clone()), Frame(set.clone()), Frame(load.clone())],
    );
    add(
        "pending_replies",
        3 << mode::HANDLERS_SHIFT,
        Limits {
            max_pending_replies: 1,
            ..roomy
        },
        vec![Frame(reply(1)), Frame(reply(2))],
    );
    add(
        "message_too_large",
        0,
        Limits {
            max_message_size: 64,
            ..roomy
        },
        vec![Frame(load.clone()), Frame(publish.clone())],
    );
    add(
        "message_too_large_raw",
        mode::RAW_API,
        Limits {
            max_message_size: 16,
            ..roomy
        },
        vec![Frame(raw.clone()), Frame(load.clone())],
    );
}

/// `frame` with flag bits `set` and `clear`ed, and maybe another request id.
fn with_header(frame: &[u8], set: u16, clear: u16, request_id: Option<u64>) -> Vec<u8> {
    let mut envelope = Envelope::decode(frame, 16).expect("a real frame");
    envelope.flags = Flags((envelope.flags.0 | set) & !clear);
    if let Some(id) = request_id {
        envelope.request_id = id;
    }
    let mut bytes = frame.to_vec();
    envelope.write_to(&mut bytes);
    bytes
}

fn write_dictionaries(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create dict/");
    let entry = |name: &str, bytes: &[u8]| {
        let escaped: String = bytes.iter().map(|b| format!("\\x{b:02x}")).collect();
        format!("{name}=\"{escaped}\"\n")
    };
    let ring = [
        entry("kind_data", &KIND_DATA.to_le_bytes()),
        entry("kind_padding", &KIND_PADDING.to_le_bytes()),
        entry("magic", &MAGIC.to_le_bytes()),
    ]
    .concat();
    std::fs::write(dir.join("frame_header.dict"), &ring).unwrap();
    std::fs::write(dir.join("ring_consumer.dict"), &ring).unwrap();

    let mut ids = String::new();
    let receivers = [
        (
            "network",
            <NetworkConnection as Receiver>::ID,
            <NetworkConnection as Receiver>::SCHEMA,
        ),
        (
            "catalog",
            <Catalog as Receiver>::ID,
            <Catalog as Receiver>::SCHEMA,
        ),
    ];
    for (name, id, schema) in receivers {
        ids += &entry(&format!("{name}_id"), &id.to_le_bytes());
        ids += &entry(&format!("{name}_schema"), &schema.to_le_bytes());
    }
    let messages = [
        ("load_resource", <LoadResource as Message>::ID),
        ("get_cookies", <GetCookies as Message>::ID),
        ("set_cookie", <SetCookie as Message>::ID),
        ("publish", <Publish as Message>::ID),
        ("lookup", <Lookup as Message>::ID),
    ];
    for (name, id) in messages {
        ids += &entry(name, &id.to_le_bytes());
    }
    ids += &entry("connection_schema", &SCHEMA.to_le_bytes());
    ids += &entry("attachment_magic", b"FERRYFDS");
    ids += &entry("request_magic", b"FERRYRQ1");
    ids += &entry("endpoint_magic", b"FERRYEP1");
    ids += &entry("reenter", b"reenter");
    ids += &entry("sync", b"sync");
    for (name, flag) in [
        ("flag_reply", Flags::REPLY),
        ("flag_sync", Flags::SYNC),
        ("flag_allowed_while_waiting", Flags::ALLOWED_WHILE_WAITING),
        ("flag_out_of_line", Flags::OUT_OF_LINE),
        ("flag_raw", Flags::RAW),
    ] {
        ids += &entry(name, &flag.to_le_bytes());
    }
    std::fs::write(dir.join("message.dict"), &ids).unwrap();
    std::fs::write(dir.join("dispatch.dict"), &ids).unwrap();

    let mut control = String::new();
    for (name, text) in [
        ("network", "network"),
        ("webcontent", "webcontent"),
        ("request_magic", "FERRYRQ1"),
        ("endpoint_magic", "FERRYEP1"),
    ] {
        control += &entry(name, text.as_bytes());
    }
    control += &entry("build_a_message", &[control::GENERATE]);
    std::fs::write(dir.join("control.dict"), &control).unwrap();
}
