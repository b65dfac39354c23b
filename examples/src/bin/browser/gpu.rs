//! The GPU process: executes the drawing commands WebContent processes
//! stream to it, one connection (and thread) per WebContent process, and
//! acknowledges each frame with the number of commands it executed and
//! their checksum, so the sender can tell that nothing was lost, duplicated
//! or reordered.

use crate::Args;
use crate::child::{Service, lock, open_ui_connection, peer_gone, serve_ui};
use crate::protocol::*;
use crate::report::{self, plural, rate};
use ferry_handoff::BrokerClient;
use ferry_transport::Context;
use ferry_transport::{Accepted, Acceptor, TransportStats};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The checksum of no commands.
pub const CHECKSUM_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds one value into a frame's checksum (both sides use it).
pub fn fold(sum: u64, value: u64) -> u64 {
    (sum ^ value)
        .wrapping_mul(0x0000_0100_0000_01b3)
        .rotate_left(17)
}

/// Folds a `SetFillColor`.
pub fn fold_fill_color(sum: u64, rgba: u32) -> u64 {
    fold(sum, 1 << 32 | u64::from(rgba))
}

/// Folds a `FillRect`.
pub fn fold_fill_rect(sum: u64, x: f32, y: f32, width: f32, height: f32) -> u64 {
    let sum = fold(sum, 2 << 32 | u64::from(x.to_bits()));
    let sum = fold(
        sum,
        u64::from(y.to_bits()) << 32 | u64::from(width.to_bits()),
    );
    fold(sum, u64::from(height.to_bits()))
}

/// Folds a `DrawGlyphs`.
pub fn fold_glyphs(sum: u64, x: f32, y: f32, glyphs: impl Iterator<Item = u16>) -> u64 {
    let mut sum = fold(sum, 3 << 32 | u64::from(x.to_bits()));
    sum = fold(sum, u64::from(y.to_bits()));
    for glyph in glyphs {
        sum = fold(sum, u64::from(glyph));
    }
    sum
}

#[derive(Default)]
struct Gpu {
    service: Arc<Service>,
    peers: Mutex<Vec<PeerRecord>>,
    failures: Mutex<Vec<String>>,
}

/// What one WebContent connection streamed.
#[derive(Default, Clone)]
struct PeerRecord {
    peer: String,
    commands: u64,
    frames: u64,
    pixels: f64,
    first_command: Option<Instant>,
    last_flush: Option<Instant>,
    /// Time from each frame's first command to its flush, summed.
    in_frames: Duration,
    stats: TransportStats,
}

pub fn run(args: &Args) -> Result<(), String> {
    let gpu = Arc::new(Gpu::default());
    let (acceptor, accepted) = Acceptor::new(gpu_service(args.wait));
    let client = BrokerClient::builder()
        .handler(acceptor)
        .from_env()
        .map_err(|e| format!("no broker: {e}"))?;
    let me = client.identity().to_string();
    let mut ui = open_ui_connection(&client, child_side_of_ui(args.wait, UI_AUX_SCHEMA))?;
    println!("[{me}] pid {}: ready to draw", std::process::id());
    let serving = gpu.clone();
    let acceptor_thread = gpu
        .service
        .clone()
        .accept_loop(accepted, move |accepted| serve(accepted, &serving));
    let done = Arc::new(AtomicBool::new(false));
    ui.register(
        0,
        AuxiliaryProcess::handler(Reporter {
            me,
            gpu: gpu.clone(),
            done: done.clone(),
        }),
    );
    let result = serve_ui(&mut ui, &done, Duration::from_secs(args.timeout));
    gpu.service.stop(Duration::from_secs(1));
    drop(client);
    let _ = acceptor_thread.join();
    result
}

/// The `RemoteRenderingBackend` of one WebContent connection.
struct Renderer {
    record: Arc<Mutex<PeerRecord>>,
    gpu: Arc<Gpu>,
    /// The frame being drawn (handlers take `&self`).
    frame: Cell<Frame>,
}

/// The frame being drawn: what has been executed since the last flush.
#[derive(Clone, Copy)]
struct Frame {
    commands: u64,
    checksum: u64,
    pixels: f64,
    started: Option<Instant>,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            commands: 0,
            checksum: CHECKSUM_SEED,
            pixels: 0.0,
            started: None,
        }
    }
}

impl Renderer {
    /// Executes one command: `fold` folds it into the frame's checksum.
    fn command(&self, pixels: f64, fold: impl FnOnce(u64) -> u64) {
        let mut frame = self.frame.get();
        frame.started.get_or_insert_with(Instant::now);
        frame.commands += 1;
        frame.checksum = fold(frame.checksum);
        frame.pixels += pixels;
        self.frame.set(frame);
    }
}

impl RemoteRenderingBackendHandler for Renderer {
    fn set_fill_color(&self, _: &mut Context, m: &ArchivedSetFillColor) {
        self.command(0.0, |sum| fold_fill_color(sum, m.rgba.to_native()));
    }

    fn fill_rect(&self, _: &mut Context, m: &ArchivedFillRect) {
        let (x, y, width, height) = (
            m.x.to_native(),
            m.y.to_native(),
            m.width.to_native(),
            m.height.to_native(),
        );
        let pixels = f64::from(width * height).max(0.0);
        self.command(pixels, |sum| fold_fill_rect(sum, x, y, width, height));
    }

    fn draw_glyphs(&self, _: &mut Context, m: &ArchivedDrawGlyphs) {
        let glyphs = m.glyphs.iter().map(|g| g.to_native());
        self.command(0.0, |sum| {
            fold_glyphs(sum, m.x.to_native(), m.y.to_native(), glyphs)
        });
    }

    fn flush(&self, _: &mut Context, m: &ArchivedFlush) -> DidFlush {
        let frame = self.frame.take();
        let reply = DidFlush {
            frame: m.frame.to_native(),
            commands: frame.commands,
            checksum: frame.checksum,
        };
        let mut record = lock(&self.record);
        if reply.commands != m.commands.to_native() || reply.checksum != m.checksum.to_native() {
            lock(&self.gpu.failures).push(format!(
                "{}: frame {} announced {} commands, executed {} (checksums {:#x} / {:#x})",
                record.peer,
                reply.frame,
                m.commands.to_native(),
                reply.commands,
                m.checksum.to_native(),
                reply.checksum
            ));
        }
        let now = Instant::now();
        record.commands += frame.commands;
        record.frames += 1;
        record.pixels += frame.pixels;
        record.first_command = record.first_command.or(frame.started);
        record.last_flush = Some(now);
        if let Some(started) = frame.started {
            record.in_frames += now.saturating_duration_since(started);
        }
        reply
    }
}

fn serve(accepted: Accepted, gpu: &Arc<Gpu>) {
    let Accepted {
        peer,
        mut connection,
    } = accepted;
    let record = Arc::new(Mutex::new(PeerRecord {
        peer: peer.to_string(),
        ..PeerRecord::default()
    }));
    connection.register(
        0,
        RemoteRenderingBackend::handler(Renderer {
            record: record.clone(),
            gpu: gpu.clone(),
            frame: Cell::default(),
        }),
    );
    while !gpu.service.stopping() {
        match connection.dispatch(Some(Duration::from_millis(200))) {
            Ok(_) => {}
            Err(e) if peer_gone(&e) => break,
            Err(e) => {
                lock(&gpu.failures).push(format!("{peer}: {e}"));
                break;
            }
        }
    }
    let mut record = lock(&record).clone();
    record.stats = connection.stats();
    lock(&gpu.peers).push(record);
}

/// The `AuxiliaryProcess` receiver: the summary at shutdown.
struct Reporter {
    me: String,
    gpu: Arc<Gpu>,
    done: Arc<AtomicBool>,
}

impl AuxiliaryProcessHandler for Reporter {
    fn shutdown(&self, _: &mut Context, _: &ArchivedShutdown) -> ProcessSummary {
        self.done.store(true, Ordering::Release);
        let failures = self.gpu.service.shut_down(&self.gpu.failures);
        let peers = lock(&self.gpu.peers);
        let total = report::total(peers.iter().map(|peer| &peer.stats));
        let commands: u64 = peers.iter().map(|p| p.commands).sum();
        let frames: u64 = peers.iter().map(|p| p.frames).sum();
        let mut lines = vec![
            format!(
                "{}; {} in {}, every frame acknowledged",
                plural(
                    peers.len() as u64,
                    "WebContent connection",
                    "WebContent connections"
                ),
                plural(commands, "command", "commands"),
                plural(frames, "frame", "frames")
            ),
            format!("traffic: {}", report::traffic(&total)),
        ];
        for peer in peers.iter() {
            let streaming = match (peer.first_command, peer.last_flush) {
                (Some(first), Some(last)) => last.saturating_duration_since(first),
                _ => Duration::ZERO,
            };
            let average = if peer.frames > 1 {
                rate(peer.commands, streaming)
            } else {
                "-".to_owned()
            };
            lines.push(format!(
                "{}: {} in {}, {:.1} Mpixels filled; commands/s: {} on average, {} within a frame",
                peer.peer,
                plural(peer.commands, "command", "commands"),
                plural(peer.frames, "frame", "frames"),
                peer.pixels / 1e6,
                average.trim_end_matches("/s"),
                rate(peer.commands, peer.in_frames).trim_end_matches("/s"),
            ));
        }
        ProcessSummary {
            process: self.me.clone(),
            pid: std::process::id(),
            lines,
            failures,
            out_of_line_sent: total.out_of_line_sent,
            peers_closed: peers.iter().map(|p| p.peer.clone()).collect(),
        }
    }
}
