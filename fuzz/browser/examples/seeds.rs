//! Writes the seeds and dictionaries of the browser targets:
//! `cargo run --example seeds` (into `corpus/`), or
//! `cargo run --example seeds -- seeds` (the committed `seeds/`).
//!
//! - `decode`: a real frame of every message and reply of the demo;
//! - `network_dispatch`: real frames of the Network receiver in each mode,
//!   with and without a synchronous call, and well-formed-message ops;
//! - the sessions: the inputs, among a few thousand drawn here, whose
//!   sessions handled the most messages (the checker itself says which).
//!
//! The dictionaries hold the wire ids (receiver ids, schema hashes,
//! message ids, as the envelope has them), flag words, the attachment
//! magic, and the strings the handlers look at.

use ferry_examples::browser_protocol::*;
use ferry_transport::fuzzing::dispatch::mode;
use ferry_transport::fuzzing::{PeerOp, Protocol, SessionReport, Target, dispatch_input};
use ferry_transport::wire::{ENVELOPE_SIZE, Envelope, Flags};
use ferry_transport::{Archivable, Message, Receiver, rkyv};
use std::path::Path;

fn frame<M: Message>(destination: u64, request_id: u64, message: &M) -> Vec<u8> {
    let flags = if M::ALLOWED_WHILE_WAITING {
        Flags::ALLOWED_WHILE_WAITING
    } else {
        0
    };
    with_envelope::<M, M>(destination, request_id, flags, message)
}

fn reply<M: Message, R: Archivable>(request_id: u64, reply: &R) -> Vec<u8> {
    with_envelope::<M, R>(0, request_id, Flags::REPLY, reply)
}

fn with_envelope<M: Message, T: Archivable>(
    destination: u64,
    request_id: u64,
    flags: u16,
    body: &T,
) -> Vec<u8> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(body).expect("serialize");
    let envelope = Envelope {
        destination,
        request_id,
        receiver: <M::Receiver as Receiver>::ID,
        schema: <M::Receiver as Receiver>::SCHEMA,
        message: M::ID,
        flags: Flags(flags),
        fd_count: 0,
    };
    let mut frame = vec![0u8; ENVELOPE_SIZE + body.len()];
    envelope.write_to(&mut frame);
    frame[ENVELOPE_SIZE..].copy_from_slice(&body);
    frame
}

fn decode_seeds() -> Vec<Vec<u8>> {
    let url = || "https://example.org/index.html".to_string();
    let frames = vec![
        frame(
            0,
            0,
            &LoadResource {
                request_id: 7,
                url: url(),
            },
        ),
        frame(0, 3, &GetCookies { url: url() }),
        reply::<GetCookies, _>(
            3,
            &Cookies {
                header: "a=1; b=2".into(),
            },
        ),
        frame(
            0,
            0,
            &SetCookie {
                url: url(),
                cookie: "theme=dark".into(),
            },
        ),
        frame(
            7,
            0,
            &ResponseStarted {
                status: 200,
                mime_type: "text/html".into(),
                content_length: 5,
            },
        ),
        frame(
            7,
            0,
            &DataReceived {
                data: b"<html".to_vec(),
            },
        ),
        frame(7, 0, &LoadFinished { sent: 5 }),
        frame(0, 0, &SetFillColor { rgba: 0xff00_00ff }),
        frame(
            0,
            0,
            &FillRect {
                x: 1.0,
                y: 2.0,
                width: 30.0,
                height: 40.0,
            },
        ),
        frame(
            0,
            0,
            &DrawGlyphs {
                x: 5.0,
                y: 6.0,
                glyphs: vec![72, 105],
            },
        ),
        frame(
            0,
            9,
            &Flush {
                frame: 1,
                commands: 3,
                checksum: 0xabc,
            },
        ),
        reply::<Flush, _>(
            9,
            &DidFlush {
                frame: 1,
                commands: 3,
                checksum: 0xabc,
            },
        ),
        frame(0, 1, &Shutdown {}),
        reply::<Shutdown, _>(
            1,
            &ProcessSummary {
                process: "network".into(),
                pid: 42,
                lines: vec!["served 3 loads".into()],
                failures: vec![],
                out_of_line_sent: 0,
                peers_closed: vec!["webcontent/1".into()],
            },
        ),
        frame(
            0,
            0,
            &LoadUrl {
                page_id: 1,
                url: url(),
            },
        ),
        frame(
            0,
            0,
            &DidStartLoad {
                page_id: 1,
                url: url(),
            },
        ),
        frame(
            0,
            0,
            &DidCommitLoad {
                page_id: 1,
                subresources: 4,
            },
        ),
        frame(
            0,
            0,
            &DidFinishLoad {
                page_id: 1,
                title: "Example".into(),
                resources: 4,
                bytes: 1234,
                elapsed_us: 900,
                failures: vec![],
            },
        ),
    ];
    frames
        .into_iter()
        .map(|frame| {
            let mut input = vec![16u8];
            input.extend_from_slice(&frame);
            input
        })
        .collect()
}

fn network_dispatch_seeds() -> Vec<Vec<u8>> {
    let url = || "https://example.org/style.css".to_string();
    let load = PeerOp::Frame(frame(
        0,
        0,
        &LoadResource {
            request_id: 3,
            url: url(),
        },
    ));
    let read = PeerOp::Frame(frame(0, 5, &GetCookies { url: url() }));
    let write = PeerOp::Frame(frame(
        0,
        0,
        &SetCookie {
            url: url(),
            cookie: "k=v".into(),
        },
    ));
    let ops = [load, read, write];
    let mut seeds: Vec<Vec<u8>> = [
        0,
        mode::TRUSTED,
        mode::SYNC_CALL,
        mode::RAW_API,
        1 << mode::REPLY_HANDLERS_SHIFT,
    ]
    .into_iter()
    .map(|mode| dispatch_input(mode, None, &ops))
    .collect();
    // Well-formed messages the checker builds from these bytes.
    let built: Vec<PeerOp> = (0..6u8)
        .map(|i| {
            PeerOp::Message(
                (0..40u8)
                    .map(|j| i.wrapping_mul(37).wrapping_add(j.wrapping_mul(11)))
                    .collect(),
            )
        })
        .collect();
    seeds.push(dispatch_input(
        mode::SYNC_CALL | mode::TRUSTED,
        None,
        &built,
    ));
    seeds.push(dispatch_input(
        mode::SMALL_DEFERRED | mode::SYNC_CALL,
        Some([2, 0, 1, 3, 4, 2, 0, 16]),
        &built,
    ));
    seeds
}

/// A small deterministic generator (xorshift), so seeds are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The inputs among `draws` random ones whose sessions handled the most.
fn session_seeds<P: Protocol>(target: &Target<P>, draws: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed_f00d);
    let mut scored: Vec<(usize, Vec<u8>)> = (0..draws)
        .map(|_| {
            let len = 64 + (rng.next() % 448) as usize;
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let report = target.session(&input).unwrap_or_else(|f| panic!("{f}"));
            let SessionReport {
                handled, answered, ..
            } = report;
            (
                if handled == 0 {
                    0
                } else {
                    8 * handled + answered
                },
                input,
            )
        })
        .filter(|(score, _)| *score > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0));
    scored.into_iter().take(8).map(|(_, input)| input).collect()
}

fn le(id: u32) -> String {
    id.to_le_bytes()
        .iter()
        .map(|b| format!("\\x{b:02x}"))
        .collect()
}

fn dictionary<P: Protocol>() -> String {
    struct Ids(Vec<String>);
    impl ferry_transport::fuzzing::Visitor for Ids {
        fn message<M: Message + ferry_transport::fuzzing::Fuzzable>(&mut self) {
            self.add::<M>();
        }
        fn request<
            M: ferry_transport::Request<Reply: ferry_transport::fuzzing::Fuzzable>
                + ferry_transport::fuzzing::Fuzzable,
        >(
            &mut self,
        ) {
            self.add::<M>();
        }
    }
    impl Ids {
        fn add<M: Message>(&mut self) {
            let receiver = <M::Receiver as Receiver>::NAME;
            for (what, id) in [
                ("receiver", <M::Receiver as Receiver>::ID),
                ("schema", <M::Receiver as Receiver>::SCHEMA),
                ("message", M::ID),
            ] {
                let line = format!("# {receiver} {what} {}\n\"{}\"\n", M::NAME, le(id));
                if !self.0.contains(&line) {
                    self.0.push(line);
                }
            }
        }
    }
    let mut ids = Ids(Vec::new());
    P::visit(&mut ids);
    let mut out = String::from("# Written by examples/seeds.rs.\n");
    for line in ids.0 {
        out += &line;
    }
    for (name, flags) in [
        ("reply", Flags::REPLY),
        ("sync", Flags::SYNC),
        ("allowed while waiting", Flags::ALLOWED_WHILE_WAITING),
        ("out of line", Flags::OUT_OF_LINE),
    ] {
        out += &format!("# flags: {name}\n\"\\x{:02x}\\x00\"\n", flags);
    }
    out += "\"FERRYFDS\"\n";
    for text in [
        "https://",
        "http://example.org/",
        ".css",
        "text/html",
        "text/css",
        "=",
        "; ",
        "/",
    ] {
        out += &format!("\"{text}\"\n");
    }
    out
}

fn write(dir: &Path, target: &str, seeds: &[Vec<u8>]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
    }
    println!("{target}: {} seeds in {}", seeds.len(), dir.display());
}

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let out = Path::new(&out);
    write(out, "decode", &decode_seeds());
    write(out, "network_dispatch", &network_dispatch_seeds());
    write(
        out,
        "network_session",
        &session_seeds(&ferry_fuzz_browser::network(), 2000),
    );
    write(
        out,
        "gpu_session",
        &session_seeds(&ferry_fuzz_browser::gpu(), 2000),
    );
    write(
        out,
        "webcontent_session",
        &session_seeds(&ferry_fuzz_browser::web_content(), 2000),
    );
    std::fs::create_dir_all("dict").expect("create dict/");
    let network = dictionary::<(NetworkConnection, WebResourceLoader)>();
    for (target, dict) in [
        ("decode", dictionary::<ferry_fuzz_browser::AllProtocols>()),
        ("network_dispatch", network.clone()),
        ("network_session", network),
        ("gpu_session", dictionary::<RemoteRenderingBackend>()),
        (
            "webcontent_session",
            dictionary::<(AuxiliaryProcess, WebPage, WebPageProxy)>(),
        ),
    ] {
        std::fs::write(format!("dict/{target}.dict"), dict).expect("write a dictionary");
    }
}
