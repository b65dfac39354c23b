//! The limits a connection sets on what its peer may make it map, hold or
//! accept (issue 10, holes 5 and 6), each attacked by a real second process:
//!
//! - a hostile *creator* hands the victim an endpoint whose rings overlap,
//!   whose rings are 1 GiB, or whose region is 1 TiB: `Connection::open`
//!   refuses it, and the victim's address space, resident memory and
//!   descriptors are what they were before;
//! - a hostile *sender* names, in an out-of-line frame, a sparse sealed
//!   memfd of 4 GiB, one above the victim's `max_message_size`, one larger
//!   than its frame announces, or sends an in-ring body above a small
//!   limit: the victim reports the violation and closes the connection,
//!   and its resident memory (anonymous and shared) and descriptors stay
//!   flat;
//! - meanwhile a bystander connection of the victim, whose peer is
//!   SIGKILLed during the attack, still gets `Disconnected`.
//!
//! The attackers do not open a `Connection`: they hold the descriptors and
//! the shared memory, and write what they like.
//!
//! Figures (memory before and after each attack, descriptor counts, how
//! long the bystander took to learn of its peer's death) are printed; run
//! with `--nocapture` to see them.

mod support;

use ferry_handoff::Channel;
use ferry_ring::{AttachError, Producer, Region, RegionError, WaitStrategy};
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope, Flags};
use ferry_transport::{
    BlobRefusal, Connection, ConnectionConfig, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_REGION_SIZE,
    DEFAULT_MAX_RING_CAPACITY, Endpoint, EndpointInfo, OpenError, RecvError, Remote, SendError,
    Violation,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use support::bystander::{BYSTANDER_ROLE, Bystander, child_bystander};
use support::footprint::{serial, status_kib};
use support::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// The child test: runs the role the parent asked for, or nothing.
#[test]
fn child() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "hostile-creator" => child_hostile_creator(),
        "blob-sender" => child_blob_sender(),
        BYSTANDER_ROLE => child_bystander(),
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// Measuring the victim.

/// This process's memory, from `/proc/self/status`, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Address space (`VmSize`).
    size: u64,
    /// Resident memory, anonymous, file-backed and shared (`VmRSS`).
    rss: u64,
    /// Resident shared memory, memfds included (`RssShmem`).
    shmem: u64,
}

impl Memory {
    fn now() -> Memory {
        Memory {
            size: status_kib("VmSize:"),
            rss: status_kib("VmRSS:"),
            shmem: status_kib("RssShmem:"),
        }
    }

    /// How much each figure grew since `before`, in KiB (0 if it shrank).
    fn growth_since(self, before: Memory) -> Memory {
        Memory {
            size: self.size.saturating_sub(before.size),
            rss: self.rss.saturating_sub(before.rss),
            shmem: self.shmem.saturating_sub(before.shmem),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmSize {} KiB, VmRSS {} KiB, RssShmem {} KiB",
            self.size, self.rss, self.shmem
        )
    }
}

/// What an attack may cost the victim, in KiB: room for the allocator, a
/// thread stack or two, and the pages of a ring header, and far below what
/// any of the attacks would cost if it worked (a 1 TiB or 2 GiB mapping, a
/// 4 GiB blob read).
const SLACK_SIZE_KIB: u64 = 256 * 1024;
const SLACK_RESIDENT_KIB: u64 = 16 * 1024;

/// Measures `attack` and checks it cost the victim nothing lasting: address
/// space and resident memory are back to what they were, and the victim
/// holds no descriptor it did not hold before.
fn measured<T>(what: &str, attack: impl FnOnce() -> T) -> T {
    let fds = open_fd_count();
    let before = Memory::now();
    let result = attack();
    let after = Memory::now();
    let grown = after.growth_since(before);
    eprintln!(
        "{what}:\n  before: {before}, {fds} descriptors\n  after:  {after}, {} descriptors",
        open_fd_count()
    );
    assert!(
        grown.size < SLACK_SIZE_KIB,
        "{what}: the victim's address space grew by {} KiB",
        grown.size
    );
    assert!(
        grown.rss < SLACK_RESIDENT_KIB && grown.shmem < SLACK_RESIDENT_KIB,
        "{what}: the victim's resident memory grew by {} KiB ({} KiB shared)",
        grown.rss,
        grown.shmem
    );
    assert!(
        open_fd_count() <= fds,
        "{what}: the victim holds descriptors it did not before"
    );
    result
}

// ---------------------------------------------------------------------------
// Hole 6: what a creator may impose on the opener.

/// The layouts a hostile creator hands out, in the order it sends them.
const CREATOR_CASES: [&str; 4] = ["overlap", "huge-rings", "huge-rings-raised", "huge-region"];

/// A ring capacity the victim accepts.
const SMALL_RING: usize = 64 * 1024;
/// A ring far above the victim's limit.
const HUGE_RING: usize = 1 << 30;

/// An endpoint of `region` with the given ring offsets (from the opener's
/// point of view) and fresh control and notification descriptors, and the
/// creator's end of the control socket.
fn hostile_endpoint(region: &Region, rx_offset: usize, tx_offset: usize) -> (Endpoint, Channel) {
    let (ours, theirs) = Channel::pair().expect("socket pair");
    let (_creators_end, opener_end) = ferry_ring::Notifier::pair().expect("notification pair");
    let endpoint = Endpoint {
        fds: vec![
            region
                .fd()
                .expect("shared")
                .try_clone_to_owned()
                .expect("dup"),
            OwnedFd::from(theirs),
            opener_end.into_fd(),
        ],
        metadata: EndpointInfo {
            region_len: region.len() as u64,
            rx_offset: rx_offset as u64,
            tx_offset: tx_offset as u64,
            schema: 0,
        }
        .encode(),
    };
    (endpoint, ours)
}

/// A region holding two valid rings of `capacity` at `first` and `second`
/// (which may overlap: the second header is written last, inside the first
/// ring's data area, and both still attach).
fn region_with_rings(len: usize, first: usize, second: usize, capacity: (usize, usize)) -> Region {
    let region = Region::create(len).expect("the hostile region");
    ferry_ring::init(&region, first, capacity.0).expect("first ring");
    ferry_ring::init(&region, second, capacity.1).expect("second ring");
    region
}

/// Where a second ring goes after a first of `capacity` (as `create` lays
/// them out).
fn after(capacity: usize) -> usize {
    ferry_ring::ring_size(capacity).next_multiple_of(ferry_ring::RING_ALIGN)
}

fn child_hostile_creator() {
    let control = child_control();
    for case in CREATOR_CASES {
        let (endpoint, _our_control) = match case {
            // The second ring's header in the middle of the first ring's
            // data area: every frame the victim sent would be read back as
            // its own ring's header and frames.
            "overlap" => {
                let inside = (ferry_ring::HEADER_SIZE + SMALL_RING / 2)
                    .next_multiple_of(ferry_ring::RING_ALIGN);
                let region = region_with_rings(
                    ferry_ring::ring_size(SMALL_RING),
                    0,
                    inside,
                    (SMALL_RING, SMALL_RING / 4),
                );
                hostile_endpoint(&region, 0, inside)
            }
            // Two 1 GiB rings, laid out properly.
            "huge-rings" | "huge-rings-raised" => {
                let second = after(HUGE_RING);
                let region = region_with_rings(
                    second + ferry_ring::ring_size(HUGE_RING),
                    0,
                    second,
                    (HUGE_RING, HUGE_RING),
                );
                hostile_endpoint(&region, second, 0)
            }
            // Two small rings at the start of a 1 TiB region.
            "huge-region" => {
                let second = after(SMALL_RING);
                let region = region_with_rings(TIB as usize, 0, second, (SMALL_RING, SMALL_RING));
                hostile_endpoint(&region, second, 0)
            }
            other => unreachable!("{other}"),
        };
        send_endpoint(&control, endpoint);
        let word = hear(&control);
        assert_eq!(word, case.as_bytes(), "the victim is at another case");
    }
}

/// A hostile creator's endpoints with overlapping rings, 1 GiB rings and a
/// 1 TiB region are refused by `Connection::open`, each with its own error,
/// and the victim's address space, resident memory and descriptors do not
/// grow. A bystander connection whose peer is SIGKILLed meanwhile still
/// learns it.
#[test]
fn a_hostile_creators_layouts_are_refused_without_cost() {
    let _serial = serial();
    let bystander = Bystander::start();
    let kill_bystanders_peer = bystander.kill_switch();
    let attacker = spawn_peer("hostile-creator", &[]);
    let control = attacker.control_clone();
    for case in CREATOR_CASES {
        let endpoint = recv_endpoint(&control);
        let config = match case {
            // With room for the 2 GiB region, the rings' own limit must
            // refuse them after they were attached.
            "huge-rings-raised" => ConnectionConfig::default().max_region_size(4 * GIB as usize),
            _ => ConnectionConfig::default(),
        };
        let refusal = measured(&format!("Connection::open, {case}"), || {
            Connection::open(endpoint, config).expect_err("a hostile layout was accepted")
        });
        eprintln!("  refused: {refusal}");
        match (case, &refusal) {
            ("overlap", OpenError::Ring(AttachError::Overlap { .. })) => {}
            (
                "huge-rings",
                OpenError::Region(RegionError::TooLarge {
                    max: DEFAULT_MAX_REGION_SIZE_U64,
                    ..
                }),
            ) => {}
            (
                "huge-rings-raised",
                OpenError::Ring(AttachError::CapacityTooLarge {
                    capacity,
                    max: DEFAULT_MAX_RING_CAPACITY_U64,
                }),
            ) if *capacity == HUGE_RING as u64 => {}
            (
                "huge-region",
                OpenError::Region(RegionError::TooLarge {
                    size: TIB,
                    max: DEFAULT_MAX_REGION_SIZE_U64,
                }),
            ) => {}
            _ => panic!("{case}: refused for the wrong reason: {refusal:?}"),
        }
        // Once the attack is under way (only the first call kills).
        kill_bystanders_peer();
        tell(&control, case.as_bytes());
    }
    attacker.expect_success();
    bystander.expect_disconnected();
}

const DEFAULT_MAX_REGION_SIZE_U64: u64 = DEFAULT_MAX_REGION_SIZE as u64;
const DEFAULT_MAX_RING_CAPACITY_U64: u64 = DEFAULT_MAX_RING_CAPACITY as u64;

/// The limits hold for a connection both ends configured alike, however
/// large its rings: `pair` (which creates and opens with one
/// configuration) works with rings above the default limit.
#[test]
fn an_openers_own_ring_capacity_is_always_accepted() {
    let _serial = serial();
    let ring = 4 * DEFAULT_MAX_RING_CAPACITY;
    let (mut a, mut b) =
        Connection::pair(ConnectionConfig::default().ring_capacity(ring)).expect("a pair");
    a.send_frame(b"ping", Some(OP_TIMEOUT)).expect("send");
    assert_eq!(
        b.recv_frame(Some(OP_TIMEOUT)).expect("recv").bytes(),
        b"ping"
    );
    // ... but a creator's larger ring is still refused by an opener that
    // did not ask for it.
    let (_creator, endpoint) =
        Connection::create(ConnectionConfig::default().ring_capacity(ring)).expect("create");
    assert!(matches!(
        Connection::open(endpoint, ConnectionConfig::default()),
        Err(OpenError::Region(RegionError::TooLarge { .. }))
    ));
}

// ---------------------------------------------------------------------------
// Hole 5: what a sender may make the receiver map.

/// One attack of the hostile sender, on a fresh connection.
struct SenderCase {
    name: &'static str,
    /// The victim's `max_message_size`.
    max_message_size: usize,
    /// Size of the sealed memfd sent (0: an in-ring frame instead).
    memfd_len: u64,
    /// The length the frame announces (in-ring: the body's length).
    announced: u64,
}

fn sender_cases() -> Vec<SenderCase> {
    vec![
        // Within a raised limit, so that what refuses it is the holes.
        SenderCase {
            name: "sparse-4GiB",
            max_message_size: 8 * GIB as usize,
            memfd_len: 4 * GIB,
            announced: 4 * GIB,
        },
        // Above the default limit: refused on the announced length.
        SenderCase {
            name: "over-max-message-size",
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            memfd_len: 2 * GIB,
            announced: 2 * GIB,
        },
        // A small announced length, a 4 GiB memfd.
        SenderCase {
            name: "larger-than-announced",
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            memfd_len: 4 * GIB,
            announced: 4 * KIB,
        },
        // An in-ring body above a small limit.
        SenderCase {
            name: "in-ring-over-limit",
            max_message_size: 1024,
            memfd_len: 0,
            announced: 4 * KIB,
        },
    ]
}

/// The violation each case must cause.
fn check_violation(case: &SenderCase, violation: &Violation) {
    let region_error = |violation: &Violation| match violation {
        Violation::Blob(BlobRefusal::Open(cause)) => cause
            .downcast_ref::<RegionError>()
            .map(|e| format!("{e:?}")),
        _ => None,
    };
    let ok = match case.name {
        "sparse-4GiB" => matches!(
            violation,
            Violation::Blob(BlobRefusal::Open(cause))
                if matches!(
                    cause.downcast_ref::<RegionError>(),
                    Some(RegionError::Sparse { size, .. }) if *size == 4 * GIB
                )
        ),
        "over-max-message-size" | "in-ring-over-limit" => {
            *violation
                == Violation::MessageTooLarge {
                    len: case.announced,
                    max: case.max_message_size,
                }
        }
        "larger-than-announced" => matches!(
            violation,
            Violation::Blob(BlobRefusal::Open(cause))
                if matches!(
                    cause.downcast_ref::<RegionError>(),
                    Some(RegionError::TooLarge { size, .. }) if *size == 4 * GIB
                )
        ),
        other => unreachable!("{other}"),
    };
    assert!(
        ok,
        "{}: the wrong violation: {violation:?} ({:?})",
        case.name,
        region_error(violation)
    );
}

/// A sealed memfd of `len` bytes of which only the first page was ever
/// written: the rest are holes, which cost its creator nothing.
fn sparse_sealed_memfd(len: u64) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "ferry-attack",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd_create");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    rustix::io::pwrite(&fd, &[0xA5; 4096], 0).expect("pwrite");
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )
    .expect("seal");
    fd
}

/// The sending half of a connection, held by hand: the victim's receive
/// ring and the control socket.
struct RawSender {
    producer: Producer,
    control: Channel,
    _notify: Vec<OwnedFd>,
    attachments: u64,
}

impl RawSender {
    fn open(endpoint: Endpoint) -> RawSender {
        let info = EndpointInfo::decode(&endpoint.metadata, endpoint.fds.len())
            .expect("endpoint metadata");
        let mut fds = endpoint.fds.into_iter();
        let region = Region::open(fds.next().expect("region")).expect("the region");
        let control = Channel::from(fds.next().expect("control socket"));
        let producer = Producer::attach(Arc::new(region), info.tx_offset as usize)
            .expect("attach")
            .with_wait_strategy(WaitStrategy::Park);
        RawSender {
            producer,
            control,
            _notify: fds.collect(),
            attachments: 0,
        }
    }

    /// Sends descriptors ahead of a frame, numbered as the victim expects.
    fn attach(&mut self, fds: &[BorrowedFd<'_>]) {
        self.attachments += 1;
        let header = ferry_transport::wire::encode_attachment_header(self.attachments);
        self.control
            .send(&header, fds)
            .expect("send the attachment");
    }

    /// Publishes a raw frame: `flags` besides RAW, `fd_count`, `body`.
    fn publish(&mut self, flags: u16, fd_count: u16, body: &[u8]) {
        let envelope = Envelope {
            flags: Flags(Flags::RAW | flags),
            fd_count,
            ..Envelope::default()
        };
        let mut grant = self
            .producer
            .reserve(ENVELOPE_SIZE + body.len(), Some(OP_TIMEOUT))
            .expect("room in the victim's ring");
        envelope.write_to(&mut grant);
        grant[ENVELOPE_SIZE..].copy_from_slice(body);
        grant.commit();
    }
}

fn child_blob_sender() {
    let control = child_control();
    for case in sender_cases() {
        let mut sender = RawSender::open(recv_endpoint(&control));
        if case.memfd_len == 0 {
            sender.publish(0, 0, &vec![7u8; case.announced as usize]);
        } else {
            let blob = sparse_sealed_memfd(case.memfd_len);
            sender.attach(&[blob.as_fd()]);
            let body = ferry_transport::wire::encode_out_of_line_body(case.announced);
            sender.publish(Flags::OUT_OF_LINE, 1, &body);
        }
        // The victim cuts us off.
        assert!(
            sender
                .control
                .wait_hangup(Some(OP_TIMEOUT))
                .expect("poll the control socket"),
            "{}: the victim did not close the connection",
            case.name
        );
        tell(&control, case.name.as_bytes());
    }
}

/// A peer names, in out-of-line frames, a sparse sealed 4 GiB memfd, one
/// above the victim's `max_message_size` and one larger than the frame
/// announces, and sends an in-ring body above a small limit. Each is a
/// violation that closes the connection (the attacker sees the hang-up),
/// and the victim's resident memory, shared memory and descriptors stay
/// flat. A bystander connection whose peer is SIGKILLed meanwhile still
/// learns it.
#[test]
fn oversized_and_sparse_blobs_are_refused_without_cost() {
    let _serial = serial();
    let bystander = Bystander::start();
    let kill_bystanders_peer = bystander.kill_switch();
    let attacker = spawn_peer("blob-sender", &[]);
    for case in sender_cases() {
        let config = ConnectionConfig::default()
            .max_message_size(case.max_message_size)
            .peer_name("blob-sender");
        let (mut victim, endpoint) = Connection::create(config).expect("create");
        attacker.send_endpoint(endpoint);
        let violation = measured(&format!("recv_frame, {}", case.name), || {
            match victim.recv_frame(Some(OP_TIMEOUT)) {
                Err(RecvError::ProtocolViolation { violation, .. }) => violation,
                Err(other) => panic!("{}: {other} instead of a violation", case.name),
                Ok(frame) => panic!("{}: accepted: {frame:?}", case.name),
            }
        });
        eprintln!("  violation: {violation}");
        check_violation(&case, &violation);
        assert!(!victim.is_open());
        attacker.expect_word(case.name.as_bytes());
        // Once the attack is under way (only the first call kills).
        kill_bystanders_peer();
    }
    attacker.expect_success();
    bystander.expect_disconnected();
}

// ---------------------------------------------------------------------------
// The send side.

/// A send above this end's own `max_message_size` fails with `TooLarge`
/// before anything is written (raw, out of line, reserved in place), and
/// the connection stays usable; the limit itself is accepted.
#[test]
fn sends_above_our_own_limit_fail_before_anything_is_sent() {
    let _serial = serial();
    let limit = 256 * 1024;
    let config = ConnectionConfig::default()
        .ring_capacity(64 * 1024)
        .max_message_size(limit);
    let (mut a, mut b) = Connection::pair(config).expect("a pair");
    let inline_max = a.max_inline_payload();
    assert!(limit > inline_max, "the limit is above the in-ring maximum");
    for len in [limit + 1, 2 * MIB as usize] {
        assert_eq!(
            a.send_frame(&vec![1u8; len], Some(OP_TIMEOUT)),
            Err(SendError::TooLarge { len, max: limit })
        );
    }
    // Typed: an archive larger than the limit, out of line or in the ring.
    let service = Remote::<proto::Service>::new(proto::SERVICE_DESTINATION);
    let big = proto::Big {
        data: vec![3u8; limit],
        checksum: 0,
        reply_len: 0,
    };
    assert!(matches!(
        a.send(service, &big),
        Err(SendError::TooLarge { len, max }) if len > limit && max == limit
    ));
    let small = ConnectionConfig::default().max_message_size(100);
    let (mut c, _d) = Connection::pair(small).expect("a pair");
    assert_eq!(
        c.reserve_frame(101, Some(OP_TIMEOUT)).map(|_| ()),
        Err(SendError::TooLarge { len: 101, max: 100 })
    );
    let note = proto::Note {
        seq: 0,
        text: "n".repeat(200),
        checksum: 0,
    };
    for _ in 0..2 {
        // Twice: once on the hot path (the first archive's room is a
        // guess), once at its exact size.
        assert!(matches!(
            c.send(service, &note),
            Err(SendError::TooLarge { len, max: 100 }) if len > 200
        ));
    }
    assert!(c.is_open());
    assert!(matches!(b.try_recv_frame(), Err(RecvError::Empty)));
    // The limit itself goes through (out of line) and arrives intact.
    let payload: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    a.send_frame(&payload, Some(OP_TIMEOUT))
        .expect("send at the limit");
    let frame = b.recv_frame(Some(OP_TIMEOUT)).expect("recv at the limit");
    assert_eq!(frame.bytes(), &payload[..]);
    assert_eq!(a.stats().out_of_line_sent, 1);
}

/// The defaults the documentation states.
#[test]
fn default_limits() {
    let config = ConnectionConfig::default();
    assert_eq!(config.max_message_size, GIB as usize);
    assert_eq!(config.max_ring_capacity, 16 * MIB as usize);
    assert_eq!(
        config.max_region_size,
        2 * ferry_ring::ring_size(16 * MIB as usize)
    );
}
