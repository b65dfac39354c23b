//! The demo's messages, declared once per receiver (the role of WebKit's
//! `.messages.in` files), and the connection settings built from them.
//!
//! | connection | created by | receivers on it |
//! |---|---|---|
//! | UI ↔ WebContent | UI process (its own `ui` service), through the broker | [`AuxiliaryProcess`], [`WebPage`] (WebContent); [`WebPageProxy`] (UI) |
//! | UI ↔ Network | UI process (its own `ui` service), through the broker | [`AuxiliaryProcess`], [`NetworkProcess`] (Network) |
//! | UI ↔ GPU | UI process (its own `ui` service), through the broker | [`AuxiliaryProcess`] (GPU) |
//! | WebContent ↔ Network | Network process, through the broker | [`NetworkConnection`] (Network); [`WebResourceLoader`] (WebContent) |
//! | WebContent ↔ GPU | GPU process, through the broker | [`RemoteRenderingBackend`] (GPU) |

use ferry_transport::{ConnectionConfig, Receiver, Trust, WaitStrategy, schema_of};

ferry_transport::protocol! {
    /// The Network process's end of a WebContent connection (WebKit's
    /// `NetworkConnectionToWebProcess`). Destination 0.
    pub receiver NetworkConnection handled_by NetworkConnectionHandler {
        /// Starts loading `url`. The request id is the WebContent process's
        /// own; every response goes to the [`WebResourceLoader`] registered
        /// at that destination. Answered once the load is complete (with
        /// the bytes sent); the WebContent process cancels it when the page
        /// is left mid-load, and the Network process stops streaming it.
        @reply_later fn load_resource => LoadResource { request_id: u64, url: String }
            -> ResourceLoaded { sent: u64 };
        /// `document.cookie` read: synchronous, the page waits for it. The
        /// Network process answers it from its cookie store's own thread.
        @reply_later fn get_cookies => GetCookies { url: String } -> Cookies { header: String };
        /// `document.cookie = "name=value"`: asynchronous.
        fn set_cookie => SetCookie { url: String, cookie: String };
    }
}

ferry_transport::protocol! {
    /// One resource load in a WebContent process (WebKit's
    /// `WebResourceLoader`), registered at the load's request id.
    pub receiver WebResourceLoader handled_by WebResourceLoaderHandler {
        /// The response's head: status, type and length.
        fn response_started => ResponseStarted { status: u16, mime_type: String, content_length: u64 };
        /// The next piece of the body, in order.
        fn data_received => DataReceived { data: Vec<u8> };
        /// The body is complete; `sent` is what the Network process sent.
        fn load_finished => LoadFinished { sent: u64 };
    }
}

ferry_transport::protocol! {
    /// The GPU process's renderer for one WebContent process (WebKit's
    /// `RemoteRenderingBackend`, fed through a stream connection). Drawing
    /// commands are small and many; each frame ends with a flush the GPU
    /// process acknowledges with what it counted.
    pub receiver RemoteRenderingBackend handled_by RemoteRenderingBackendHandler {
        /// Sets the fill colour for what follows.
        fn set_fill_color => SetFillColor { rgba: u32 };
        /// Fills a rectangle.
        fn fill_rect => FillRect { x: f32, y: f32, width: f32, height: f32 };
        /// Draws a run of glyphs.
        fn draw_glyphs => DrawGlyphs { x: f32, y: f32, glyphs: Vec<u16> };
        /// Ends frame `frame` of `commands` commands whose checksum is
        /// `checksum`; the reply carries what the GPU process counted.
        fn flush => Flush { frame: u64, commands: u64, checksum: u64 }
            -> DidFlush { frame: u64, commands: u64, checksum: u64 };
    }
}

ferry_transport::protocol! {
    /// What the UI process asks of every child (WebKit's
    /// `AuxiliaryProcess`). Destination 0.
    pub receiver AuxiliaryProcess handled_by AuxiliaryProcessHandler {
        /// Finish up and report; the process exits after replying.
        fn shutdown => Shutdown {} -> ProcessSummary {
            process: String,
            pid: u32,
            lines: Vec<String>,
            failures: Vec<String>,
            out_of_line_sent: u64,
            peers_closed: Vec<String>
        };
    }
}

ferry_transport::protocol! {
    /// What the UI process tells the Network process (WebKit's
    /// `NetworkProcess`). Destination 0.
    pub receiver NetworkProcess handled_by NetworkProcessHandler {
        /// Only the WebContent process with broker instance id `instance`
        /// may load `url` (the tab the UI process signed in); the others
        /// are refused. Synchronous, so the rule is in force before any
        /// tab loads.
        fn restrict_resource => RestrictResource { url: String, instance: u64 } -> ResourceRestricted {};
    }
}

ferry_transport::protocol! {
    /// A page in a WebContent process (WebKit's `WebPage`), driven by the UI
    /// process. Destination 0 (one page per process in this demo).
    pub receiver WebPage handled_by WebPageHandler {
        /// Navigate to `url`; `page_id` names this navigation.
        fn load_url => LoadUrl { page_id: u64, url: String };
    }
}

ferry_transport::protocol! {
    /// The UI process's mirror of a page (WebKit's `WebPageProxy`).
    pub receiver WebPageProxy handled_by WebPageProxyHandler {
        /// A navigation started.
        fn did_start_load => DidStartLoad { page_id: u64, url: String };
        /// The document arrived and its subresources are requested.
        fn did_commit_load => DidCommitLoad { page_id: u64, subresources: u32 };
        /// The page asked for a resource the Network process restricts
        /// (the account inbox): `status` 200 if it was served (and
        /// verified), 403 if refused, with the Network process's reason in
        /// `detail`.
        fn did_check_access => DidCheckAccess { page_id: u64, url: String, status: u16, detail: String };
        /// A navigation finished: the page's title, how many subresources
        /// and bytes it took, how long, and what failed to verify.
        fn did_finish_load => DidFinishLoad {
            page_id: u64,
            title: String,
            resources: u32,
            bytes: u64,
            elapsed_us: u64,
            failures: Vec<String>
        };
    }
}

/// The schema of a UI ↔ WebContent connection.
pub const UI_WEB_SCHEMA: u64 = schema_of(&[
    AuxiliaryProcess::SCHEMA,
    WebPage::SCHEMA,
    WebPageProxy::SCHEMA,
]);
/// The schema of a UI ↔ GPU connection.
pub const UI_AUX_SCHEMA: u64 = schema_of(&[AuxiliaryProcess::SCHEMA]);
/// The schema of a UI ↔ Network connection.
pub const UI_NETWORK_SCHEMA: u64 = schema_of(&[AuxiliaryProcess::SCHEMA, NetworkProcess::SCHEMA]);
/// The schema of a WebContent ↔ Network connection.
pub const NETWORK_SCHEMA: u64 = schema_of(&[NetworkConnection::SCHEMA, WebResourceLoader::SCHEMA]);
/// The schema of a WebContent ↔ GPU connection.
pub const GPU_SCHEMA: u64 = schema_of(&[RemoteRenderingBackend::SCHEMA]);

/// Ring size of the UI's connections: notifications and summaries only.
const UI_RING: usize = 64 << 10;
/// Ring size of a WebContent ↔ Network connection: four streamed pieces
/// ([`CHUNK`]) and more. Like a network stack's socket buffer it bounds
/// what a load has in flight: the Network process streams a body no faster
/// than the page reads it, so a page left mid-load stops its loads while
/// they still stream. (Large bodies travel out of line anyway.)
const NETWORK_RING: usize = 64 << 10;
/// Ring size of the GPU stream: a few frames of commands.
const GPU_RING: usize = 256 << 10;

/// Bodies at least this large are sent in one `DataReceived` (out of line,
/// as WebKit hands over a cached resource as shared memory); smaller ones
/// are streamed in [`CHUNK`]-byte pieces.
pub const LARGE_BODY: usize = 1 << 20;
/// The piece size of streamed bodies.
pub const CHUNK: usize = 16 << 10;

/// How the UI process opens its end of a child's connection. Children are
/// less privileged than the UI process: what they send is copied out once
/// and validated there.
pub fn ui_side(wait: WaitStrategy, schema: u64, peer: &str) -> ConnectionConfig {
    ConnectionConfig::default()
        .wait(wait)
        .schema(schema)
        .ring_capacity(UI_RING)
        .trust(Trust::Untrusted)
        .peer_name(peer)
}

/// How a child opens its end of the UI process's connection.
pub fn child_side_of_ui(wait: WaitStrategy, schema: u64) -> ConnectionConfig {
    ConnectionConfig::default()
        .wait(wait)
        .schema(schema)
        .ring_capacity(UI_RING)
        .peer_name("ui")
}

/// How the Network process creates WebContent connections: WebContent is
/// untrusted (a compromised renderer must not reach beyond its connection).
pub fn network_service(wait: WaitStrategy) -> ConnectionConfig {
    ConnectionConfig::default()
        .wait(wait)
        .schema(NETWORK_SCHEMA)
        .ring_capacity(NETWORK_RING)
        .trust(Trust::Untrusted)
}

/// How a WebContent process opens its Network connection: it trusts the
/// Network process, so response bodies are read in place, zero-copy.
pub fn network_client(wait: WaitStrategy) -> ConnectionConfig {
    ConnectionConfig::default()
        .wait(wait)
        .schema(NETWORK_SCHEMA)
        .ring_capacity(NETWORK_RING)
}

/// How the GPU process creates WebContent connections (untrusted peers).
pub fn gpu_service(wait: WaitStrategy) -> ConnectionConfig {
    ConnectionConfig::default()
        .wait(wait)
        .schema(GPU_SCHEMA)
        .ring_capacity(GPU_RING)
        .trust(Trust::Untrusted)
}

/// How a WebContent process opens its GPU connection.
pub fn gpu_client(wait: WaitStrategy) -> ConnectionConfig {
    ConnectionConfig::default()
        .wait(wait)
        .schema(GPU_SCHEMA)
        .ring_capacity(GPU_RING)
}
