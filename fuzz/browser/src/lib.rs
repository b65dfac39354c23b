//! # ferry-fuzz-browser
//!
//! A worked example of fuzzing a user's own protocol with
//! `ferry_transport::fuzzing`: the browser demo's declarations
//! (`ferry_examples::browser_protocol`), served by handlers written here
//! the way the demo's processes handle them, from a crate of its own, as a
//! team adopting ferry would. Each fuzz target in `fuzz_targets/` is one
//! line calling what this file defines.
//!
//! | target | victim | checker |
//! |---|---|---|
//! | `decode` | every receiver of the demo | `fuzz_decode` |
//! | `network_dispatch` | the Network process's end of a WebContent connection | `Target::fuzz_dispatch` |
//! | `network_session` | the same, over a live connection | `Target::fuzz_session` |
//! | `gpu_session` | the GPU process's end of a WebContent connection | `Target::fuzz_session` |
//! | `webcontent_session` | a WebContent process's end of its UI connection | `Target::fuzz_session` |

use ferry_examples::browser_protocol::*;
use ferry_transport::fuzzing::Target;
use ferry_transport::{Context, Remote, ReplyHandle, WaitStrategy};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hint::black_box;

/// Every receiver the demo declares, for the `decode` target.
pub type AllProtocols = (
    NetworkConnection,
    WebResourceLoader,
    RemoteRenderingBackend,
    AuxiliaryProcess,
    NetworkProcess,
    WebPage,
    WebPageProxy,
);

/// The Network process's end of a WebContent connection, as the demo
/// configures it (untrusted peer, `NETWORK_SCHEMA`), serving
/// `NetworkConnection` at destination 0.
pub fn network() -> Target<(NetworkConnection, WebResourceLoader)> {
    Target::new(network_service(WaitStrategy::default()))
        .serve(0, || NetworkConnection::handler(Network::default()))
}

/// The GPU process's end of a WebContent connection, serving
/// `RemoteRenderingBackend` at destination 0.
pub fn gpu() -> Target<RemoteRenderingBackend> {
    Target::new(gpu_service(WaitStrategy::default()))
        .serve(0, || RemoteRenderingBackend::handler(Renderer::default()))
}

/// A WebContent process's end of its UI connection, serving
/// `AuxiliaryProcess` and `WebPage` at destination 0; the UI process's
/// `WebPageProxy` is the peer's.
pub fn web_content() -> Target<(AuxiliaryProcess, WebPage, WebPageProxy)> {
    Target::new(child_side_of_ui(WaitStrategy::default(), UI_WEB_SCHEMA))
        .serve(0, || AuxiliaryProcess::handler(Summary::default()))
        .serve(0, || WebPage::handler(Page::default()))
}

/// The Network process's `NetworkConnection`: a cookie jar, and each load
/// answered at once on the WebContent process's `WebResourceLoader`
/// registered at the load's request id (the demo queues and streams them;
/// the messages are the same).
#[derive(Default)]
pub struct Network {
    jar: RefCell<BTreeMap<String, String>>,
}

impl NetworkConnectionHandler for Network {
    fn load_resource(
        &self,
        context: &mut Context,
        message: &ArchivedLoadResource,
        reply: ReplyHandle<ResourceLoaded>,
    ) {
        let loader = Remote::<WebResourceLoader>::new(message.request_id.to_native());
        let url = message.url.as_str();
        let body: Vec<u8> = url.bytes().rev().take(CHUNK).collect();
        let mime_type = if url.ends_with(".css") {
            "text/css"
        } else {
            "text/html"
        };
        let started = ResponseStarted {
            status: if url.is_empty() { 404 } else { 200 },
            mime_type: mime_type.into(),
            content_length: body.len() as u64,
        };
        // The peer may stop reading: a full ring is the peer's problem,
        // not a reason to block (the demo streams with `try_send` too).
        let _ = context.try_send(loader, &started);
        let sent = body.len() as u64;
        let _ = context.try_send(loader, &DataReceived { data: body });
        let _ = context.try_send(loader, &LoadFinished { sent });
        // The demo answers when the load is complete (here at once); a
        // cancelled load is answered all the same, as the demo does.
        black_box(reply.is_cancelled());
        reply.reply(&ResourceLoaded { sent });
    }

    fn get_cookies(
        &self,
        _: &mut Context,
        message: &ArchivedGetCookies,
        reply: ReplyHandle<Cookies>,
    ) {
        black_box(message.url.as_str());
        let header = self
            .jar
            .borrow()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        // The demo's cookie-store thread answers through the handle; the
        // queue of answers given later is the same from this thread.
        reply.reply(&Cookies { header });
    }

    fn set_cookie(&self, _: &mut Context, message: &ArchivedSetCookie) {
        black_box(message.url.as_str());
        if let Some((name, value)) = message.cookie.as_str().split_once('=') {
            let mut jar = self.jar.borrow_mut();
            // Bounded, as a real jar is.
            if jar.len() < 64 || jar.contains_key(name.trim()) {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }
}

/// The GPU process's renderer: counts commands and folds a checksum over
/// them, as the demo does, and answers each flush with what it counted.
#[derive(Default)]
pub struct Renderer {
    commands: Cell<u64>,
    checksum: Cell<u64>,
    pixels: Cell<f64>,
}

impl Renderer {
    fn command(&self, pixels: f64, value: u64) {
        self.commands.set(self.commands.get() + 1);
        self.checksum
            .set(self.checksum.get().rotate_left(5) ^ value.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.pixels.set(self.pixels.get() + pixels);
    }
}

impl RemoteRenderingBackendHandler for Renderer {
    fn set_fill_color(&self, _: &mut Context, m: &ArchivedSetFillColor) {
        self.command(0.0, u64::from(m.rgba.to_native()));
    }

    fn fill_rect(&self, _: &mut Context, m: &ArchivedFillRect) {
        let (x, y) = (m.x.to_native(), m.y.to_native());
        let (width, height) = (m.width.to_native(), m.height.to_native());
        let pixels = f64::from(width * height).max(0.0);
        let value = u64::from(x.to_bits()) << 32 | u64::from(y.to_bits());
        self.command(
            pixels,
            value ^ u64::from(width.to_bits() ^ height.to_bits()),
        );
    }

    fn draw_glyphs(&self, _: &mut Context, m: &ArchivedDrawGlyphs) {
        let sum = m
            .glyphs
            .iter()
            .fold(u64::from(m.x.to_native().to_bits()), |sum, g| {
                sum.rotate_left(3) ^ u64::from(g.to_native())
            });
        self.command(0.0, sum ^ u64::from(m.y.to_native().to_bits()));
    }

    fn flush(&self, _: &mut Context, m: &ArchivedFlush) -> DidFlush {
        let reply = DidFlush {
            frame: m.frame.to_native(),
            commands: self.commands.take(),
            checksum: self.checksum.take(),
        };
        black_box(self.pixels.take());
        black_box(
            reply.commands == m.commands.to_native() && reply.checksum == m.checksum.to_native(),
        );
        reply
    }
}

/// A WebContent process's page: a navigation tells the UI process it
/// started, committed and finished, as the demo's page does.
#[derive(Default)]
pub struct Page {
    loads: Cell<u32>,
}

impl WebPageHandler for Page {
    fn load_url(&self, ui: &mut Context, m: &ArchivedLoadUrl) {
        let page_id = m.page_id.to_native();
        let url = m.url.as_str();
        self.loads.set(self.loads.get() + 1);
        let proxy = Remote::<WebPageProxy>::new(0);
        let _ = ui.try_send(
            proxy,
            &DidStartLoad {
                page_id,
                url: url.to_owned(),
            },
        );
        let subresources = url.matches('/').count() as u32;
        let _ = ui.try_send(
            proxy,
            &DidCommitLoad {
                page_id,
                subresources,
            },
        );
        let finished = DidFinishLoad {
            page_id,
            title: url.rsplit('/').next().unwrap_or_default().to_owned(),
            resources: subresources,
            bytes: url.len() as u64,
            elapsed_us: u64::from(self.loads.get()),
            failures: Vec::new(),
        };
        let _ = ui.try_send(proxy, &finished);
    }
}

/// A child's answer to the UI process's shutdown call.
#[derive(Default)]
pub struct Summary {
    calls: Cell<u32>,
}

impl AuxiliaryProcessHandler for Summary {
    fn shutdown(&self, _: &mut Context, _: &ArchivedShutdown) -> ProcessSummary {
        self.calls.set(self.calls.get() + 1);
        ProcessSummary {
            process: "webcontent/1".into(),
            pid: std::process::id(),
            lines: vec![format!("shutdown {}", self.calls.get())],
            failures: Vec::new(),
            out_of_line_sent: 0,
            peers_closed: Vec::new(),
        }
    }
}
