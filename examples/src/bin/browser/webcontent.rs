//! The WebContent process: loads the pages the UI process asks for from the
//! Network process, checks every byte against the embedded site, reads and
//! writes cookies, streams drawing commands to the GPU process, and tells
//! the UI process how each load went.
//!
//! Loading follows WebKit's `WebResourceLoader` / Chromium's
//! `ResourceDispatcher`: the process picks a request id for each load,
//! registers a `WebResourceLoader` receiver at that id (the destination of
//! every response message), and sends `LoadResource`; the Network process's
//! `ResponseStarted`, `DataReceived`… and `LoadFinished` come back to it.
//! A page is loaded in three steps: the document; then its inline script's
//! `document.cookie` reads (synchronous calls: the page waits for each);
//! then every subresource at once, and the cookies its scripts set. The
//! first page's script also reads the account inbox, which the Network
//! process serves to the signed-in tab only; the UI process hears what came
//! back.
//!
//! Each `LoadResource` is a request the process can cancel. The first time
//! a process loads [`NAVIGATE_AWAY_FROM`], the user navigates away as soon
//! as its subresources start arriving: the loads still in flight are
//! cancelled (the Network process stops streaming them) and their loaders
//! unregistered, so the data already on its way is dropped on arrival,
//! counted, and the connection carries on. The user then comes back and
//! the page loads again, in full.
//!
//! If the Network process crashes, the broker tells us (`PeerGone`) and
//! relaunches it: we ask the broker for `network` again, set our visitor
//! cookie in the new (empty) jar, and request again every load that was in
//! flight.

use crate::Args;
use crate::child::{lock, open_ui_connection, peer_gone, serve_ui};
use crate::gpu::{CHECKSUM_SEED, fold_fill_color, fold_fill_rect, fold_glyphs};
use crate::protocol::*;
use crate::report::{self, Latency, bytes, count, duration, plural, rate};
use crate::site::{self, BodyHash, INBOX, Resource, site};
use ferry_handoff::{BrokerClient, ClientEvent, ConnectError, PeerId};
use ferry_transport::Context;
use ferry_transport::{
    CallError, Connection, IntroductionError, Message, Remote, RequestId, SendError,
    TransportStats, WaitStrategy, connect,
};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long to wait for the broker to introduce us.
const INTRODUCTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a message waits for room in a ring.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a synchronous cookie read may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one page may take to load.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for the other WebContent processes' cookies to appear.
const COOKIE_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for a relaunched Network process.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The page the user leaves mid-load on its first visit (its JSON archive
/// streams in many pieces, so its loads are still in flight).
const NAVIGATE_AWAY_FROM: &str = "/news.html";
/// How many frames may wait for the GPU process's acknowledgment.
const FRAMES_IN_FLIGHT: usize = 2;

const NETWORK: Remote<NetworkConnection> = Remote::new(0);
const PROXY: Remote<WebPageProxy> = Remote::new(0);
const BACKEND: Remote<RemoteRenderingBackend> = Remote::new(0);

pub fn run(args: &Args) -> Result<(), String> {
    let (gone_tx, gone) = mpsc::channel();
    let client = BrokerClient::builder()
        .on_event(move |event| {
            if let ClientEvent::PeerGone(peer) = event {
                let _ = gone_tx.send(peer);
            }
        })
        .from_env()
        .map_err(|e| format!("no broker: {e}"))?;
    let client = Arc::new(client);
    let wait = args.wait;
    let me = client.identity().to_string();
    let mut ui = open_ui_connection(&client, child_side_of_ui(wait, UI_WEB_SCHEMA))?;
    site(); // generate the site (and its hashes) before the first load

    let introducing = Instant::now();
    // The Network process may be being relaunched (`--crash network`).
    let network = connect_network(&client, wait, None)
        .map_err(|e| format!("no connection to the Network process: {e}"))?;
    let gpu = connect(&client, "gpu", gpu_client(wait), INTRODUCTION_TIMEOUT)
        .map_err(|e| format!("no connection to the GPU process: {e}"))?;
    let introduced_in = introducing.elapsed();
    // A compromised renderer would like to talk to another one; the broker's
    // policy must say no.
    let denial = match connect(
        &client,
        "webcontent",
        network_client(wait),
        INTRODUCTION_TIMEOUT,
    ) {
        Err(IntroductionError::Broker(ConnectError::Denied)) => Ok(()),
        Err(e) => Err(format!(
            "asking for a connection to webcontent: expected a denial, got: {e}"
        )),
        Ok(connection) => Err(format!(
            "the broker connected us to {}: its policy should deny WebContent → WebContent",
            connection.config().peer_name
        )),
    };
    println!(
        "[{me}] pid {}: connected to {} and {} through the broker in {}; connection to webcontent: {}",
        std::process::id(),
        network.config().peer_name,
        gpu.config().peer_name,
        duration(introduced_in.as_nanos() as u64),
        if denial.is_ok() {
            "denied by policy"
        } else {
            "NOT DENIED"
        }
    );

    let mut page = Page {
        me: me.clone(),
        client,
        wait,
        reconnects: Vec::new(),
        web: args.web,
        cookie_reads: args.cookie_reads,
        network,
        next_request: 1,
        loads: Latency::default(),
        cookie_calls: Latency::default(),
        pages: 0,
        verified: 0,
        missing: 0,
        body_bytes: 0,
        failures: Vec::new(),
        visitor: format!(
            "{}=pid{}",
            Page::visitor_cookie(args.index),
            std::process::id()
        ),
        introduced_in,
        denied: denial.is_ok(),
        navigated_away: None,
    };
    if let Err(failure) = &denial {
        page.failures.push(failure.clone());
    }
    page.set_visitor_cookie();

    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        let (commands, fps) = (args.frame_commands, args.fps);
        std::thread::Builder::new()
            .name("gpu stream".into())
            .spawn(move || stream(gpu, &stop, commands, fps))
            .map_err(|e| format!("cannot start the GPU stream: {e}"))?
    };
    let page = Arc::new(Mutex::new(page));
    watch_network(page.clone(), gone)?;
    let done = Arc::new(AtomicBool::new(false));
    ui.register(0, WebPage::handler(PageHandler { page: page.clone() }));
    ui.register(
        0,
        AuxiliaryProcess::handler(Reporter {
            page,
            stream: RefCell::new(Some((stop, stream))),
            done: done.clone(),
        }),
    );
    serve_ui(&mut ui, &done, Duration::from_secs(args.timeout))
}

/// Reconnects as soon as the broker says the Network process is gone, so
/// that a tab between loads reconnects too (one in the middle of a load
/// notices on its own and gets there first).
fn watch_network(page: Arc<Mutex<Page>>, gone: Receiver<PeerId>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("network watch".into())
        .spawn(move || {
            while let Ok(peer) = gone.recv() {
                let mut page = lock(&page);
                if peer.to_string() == page.network.config().peer_name {
                    page.reconnect_network();
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the network watch: {e}"))
}

/// Asks the broker for `network`; while it is being relaunched (the old
/// instance, `crashed`, hung up but is not reaped yet), asks again, for at
/// most [`RECONNECT_TIMEOUT`].
fn connect_network(
    client: &BrokerClient,
    wait: WaitStrategy,
    crashed: Option<&str>,
) -> Result<Connection, String> {
    let deadline = Instant::now() + RECONNECT_TIMEOUT;
    loop {
        let failure = match connect(
            client,
            "network",
            network_client(wait),
            INTRODUCTION_TIMEOUT,
        ) {
            Ok(network) if Some(network.config().peer_name.as_str()) != crashed => {
                return Ok(network);
            }
            Ok(_) => "introduced to the crashed instance again".to_owned(),
            Err(IntroductionError::Broker(
                ConnectError::UnknownService | ConnectError::TargetGone,
            )) => "not relaunched yet".to_owned(),
            Err(e) => return Err(e.to_string()),
        };
        if Instant::now() >= deadline {
            return Err(failure);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The page and everything this process measures.
struct Page {
    me: String,
    client: Arc<BrokerClient>,
    wait: WaitStrategy,
    /// One line per reconnection to a relaunched Network process.
    reconnects: Vec<String>,
    web: u32,
    cookie_reads: u32,
    network: Connection,
    next_request: u64,
    loads: Latency,
    cookie_calls: Latency,
    pages: u64,
    verified: u64,
    missing: u64,
    body_bytes: u64,
    failures: Vec<String>,
    /// This process's visitor cookie, `name=value`.
    visitor: String,
    introduced_in: Duration,
    /// Whether the broker denied us a connection to another WebContent
    /// process, as its policy should.
    denied: bool,
    /// Once the user left a page mid-load: its URL and how many loads were
    /// cancelled.
    navigated_away: Option<(String, usize)>,
}

/// Loads in flight.
struct Batch {
    /// Where each load's loader reports (kept to reload after a crash).
    done: Sender<Outcome>,
    outcomes_rx: Receiver<Outcome>,
    pending: Vec<(u64, String)>,
    /// Each pending load's request, to cancel it.
    requests: Vec<(u64, RequestId)>,
    /// Bytes of body the batch's loaders received so far.
    progress: Arc<AtomicU64>,
    outcomes: Vec<Outcome>,
}

/// How one resource load ended.
struct Outcome {
    request_id: u64,
    url: String,
    status: u16,
    bytes: u64,
    elapsed: Duration,
    /// The body, kept for documents and scripts (which are parsed).
    text: Option<String>,
    problems: Vec<String>,
}

impl Page {
    fn visitor_cookie(index: u32) -> String {
        format!("visitor-{}", index + 1)
    }

    /// Sets this process's visitor cookie and checks the jar has it.
    fn set_visitor_cookie(&mut self) {
        let cookie = self.visitor.clone();
        let url = site::url("/");
        let set = self.send_to_network(&SetCookie {
            url: url.clone(),
            cookie: cookie.clone(),
        });
        if let Err(e) = set {
            self.failures.push(format!("SetCookie failed: {e}"));
            return;
        }
        // Same connection, so the read is handled after the write.
        match self.read_cookies(&url) {
            Some(header) if header.split("; ").any(|c| c == cookie) => {}
            Some(header) => self
                .failures
                .push(format!("set {cookie}, then read back {header:?}")),
            None => {}
        }
    }

    /// Sends a message to the Network process; if it is gone (crashed),
    /// reconnects to its relaunched instance and sends it there.
    fn send_to_network<M: Message<Receiver = NetworkConnection>>(
        &mut self,
        message: &M,
    ) -> Result<(), SendError> {
        match self
            .network
            .send_with_fds(NETWORK, message, &[], Some(SEND_TIMEOUT))
        {
            Err(SendError::Disconnected) if self.reconnect_network() => {
                self.network
                    .send_with_fds(NETWORK, message, &[], Some(SEND_TIMEOUT))
            }
            other => other,
        }
    }

    /// The Network process is gone: asks the broker for `network` until the
    /// relaunched instance answers, and sets our visitor cookie in its jar.
    /// `false` (and a failure recorded) if it does not come back.
    fn reconnect_network(&mut self) -> bool {
        let old = self.network.config().peer_name.clone();
        let started = Instant::now();
        match connect_network(&self.client, self.wait, Some(&old)) {
            Ok(network) => self.network = network,
            Err(failure) => {
                self.failures.push(format!(
                    "{old} is gone and no Network process came back: {failure}"
                ));
                return false;
            }
        }
        let line = format!(
            "{old} is gone; reconnected to the relaunched {} through the broker in {}",
            self.network.config().peer_name,
            duration(started.elapsed().as_nanos() as u64)
        );
        println!("[{}] {line}", self.me);
        self.reconnects.push(line);
        self.set_visitor_cookie();
        true
    }

    /// `document.cookie`: a synchronous call to the Network process.
    fn read_cookies(&mut self, url: &str) -> Option<String> {
        let started = Instant::now();
        let request = GetCookies {
            url: url.to_owned(),
        };
        let mut reply = self.network.send_sync(NETWORK, &request, SYNC_TIMEOUT);
        if matches!(
            reply,
            Err(CallError::Disconnected | CallError::Send(SendError::Disconnected))
        ) && self.reconnect_network()
        {
            reply = self.network.send_sync(NETWORK, &request, SYNC_TIMEOUT);
        }
        match reply {
            Ok(reply) => {
                self.cookie_calls.record(started.elapsed());
                Some(reply.header.as_str().to_owned())
            }
            Err(e) => {
                self.failures.push(format!("GetCookies failed: {e}"));
                None
            }
        }
    }

    /// Loads `url` and its subresources, telling the UI process.
    fn load(&mut self, ui: &mut Context, page_id: u64, url: &str) {
        let notified = ui.send_with_fds(
            PROXY,
            &DidStartLoad {
                page_id,
                url: url.to_owned(),
            },
            &[],
            Some(SEND_TIMEOUT),
        );
        if notified.is_err() {
            return; // the UI process is gone; the dispatch loop will say so
        }
        let started = Instant::now();
        let deadline = started + PAGE_TIMEOUT;
        let mut problems = Vec::new();

        // 1. The document.
        let document = self.fetch(&[url.to_owned()], deadline).pop();
        let html = document
            .as_ref()
            .and_then(|d| d.text.clone())
            .unwrap_or_default();
        let title = site::title(&html).unwrap_or("(untitled)").to_owned();
        let mut outcomes: Vec<Outcome> = document.into_iter().collect();
        if page_id == 1 {
            self.check_inbox(ui, page_id, deadline);
        }

        // 2. The inline script reads document.cookie (synchronously); the
        //    jar always has this process's visitor cookie.
        for _ in 0..self.cookie_reads {
            if let Some(header) = self.read_cookies(url) {
                if !header.split("; ").any(|cookie| cookie == self.visitor) {
                    problems.push(format!(
                        "document.cookie lacks {}: {header:?}",
                        self.visitor
                    ));
                }
            }
        }

        // 3. Every subresource at once; then the scripts' cookie writes.
        let subresources = site::subresources(&html);
        let mut batch = self.start(&subresources);
        let committed = DidCommitLoad {
            page_id,
            subresources: subresources.len() as u32,
        };
        let _ = ui.send_with_fds(PROXY, &committed, &[], Some(SEND_TIMEOUT));
        let fetched = if self.navigated_away.is_none() && url == site::url(NAVIGATE_AWAY_FROM) {
            // The user leaves mid-load, then comes back.
            let left = self.navigate_away(&mut batch, url, deadline);
            let mut fetched = self.finish(&mut batch, deadline);
            let mut again = self.start(&left);
            fetched.extend(self.finish(&mut again, deadline));
            fetched.sort_by_key(|o| o.request_id);
            fetched
        } else {
            self.finish(&mut batch, deadline)
        };
        for script in fetched.iter().filter(|o| o.url.ends_with(".js")) {
            for cookie in site::cookie_writes(script.text.as_deref().unwrap_or("")) {
                let set = SetCookie {
                    url: url.to_owned(),
                    cookie,
                };
                if let Err(e) = self.send_to_network(&set) {
                    problems.push(format!("SetCookie failed: {e}"));
                }
            }
        }
        outcomes.extend(fetched);

        let mut page_bytes = 0;
        for outcome in &outcomes {
            page_bytes += outcome.bytes;
            if outcome.problems.is_empty() {
                self.loads.record(outcome.elapsed);
                self.body_bytes += outcome.bytes;
                if outcome.status == 404 {
                    self.missing += 1;
                } else {
                    self.verified += 1;
                }
            } else {
                for problem in &outcome.problems {
                    problems.push(format!(
                        "{} (request {}): {problem}",
                        outcome.url, outcome.request_id
                    ));
                }
            }
        }
        self.pages += 1;
        self.failures.extend(problems.iter().cloned());
        let _ = ui.send_with_fds(
            PROXY,
            &DidFinishLoad {
                page_id,
                title,
                resources: subresources.len() as u32,
                bytes: page_bytes,
                elapsed_us: started.elapsed().as_micros() as u64,
                failures: problems,
            },
            &[],
            Some(SEND_TIMEOUT),
        );
    }

    /// Loads every URL in `urls` at once; returns when all are done, failed,
    /// or the deadline passed. Outcomes are in request order.
    fn fetch(&mut self, urls: &[String], deadline: Instant) -> Vec<Outcome> {
        let mut batch = self.start(urls);
        self.finish(&mut batch, deadline)
    }

    /// Sends a `LoadResource` for every URL, each with a fresh request id
    /// and a `WebResourceLoader` registered at that id.
    fn start(&mut self, urls: &[String]) -> Batch {
        let (done, outcomes_rx) = mpsc::channel();
        let mut batch = Batch {
            done: done.clone(),
            outcomes_rx,
            pending: Vec::new(),
            requests: Vec::new(),
            progress: Arc::default(),
            outcomes: Vec::new(),
        };
        for url in urls {
            let request_id = self.next_request;
            self.next_request += 1;
            match self.request(request_id, url, &done, &batch.progress) {
                Ok(request) => {
                    batch.pending.push((request_id, url.clone()));
                    batch.requests.push((request_id, request));
                }
                // A crashed Network process: `collect` reconnects and
                // reloads it.
                Err(SendError::Disconnected) => batch.pending.push((request_id, url.clone())),
                Err(e) => {
                    self.network.unregister::<WebResourceLoader>(request_id);
                    batch.outcomes.push(Outcome::failed(
                        request_id,
                        url,
                        format!("LoadResource failed: {e}"),
                    ));
                }
            }
        }
        batch
    }

    /// Registers a `WebResourceLoader` at `request_id` and sends the
    /// `LoadResource` for `url`.
    fn request(
        &mut self,
        request_id: u64,
        url: &str,
        done: &Sender<Outcome>,
        progress: &Arc<AtomicU64>,
    ) -> Result<RequestId, SendError> {
        let loader = Loader {
            request_id,
            expected: site().get(url),
            started: Instant::now(),
            done: done.clone(),
            progress: progress.clone(),
            state: RefCell::new(Arrived {
                url: url.to_owned(),
                ..Arrived::default()
            }),
        };
        self.network
            .register(request_id, WebResourceLoader::handler(loader));
        let request = LoadResource {
            request_id,
            url: url.to_owned(),
        };
        // The answer only says the Network process is done with it
        // (`LoadFinished` told the loader already).
        self.network.send_cancellable(NETWORK, &request, |_, _| {})
    }

    /// The Network process crashed with `pending` loads in flight: once
    /// reconnected, requests them again (each from the start, with a fresh
    /// loader at the same request id, and a fresh request to cancel: the
    /// old ones died with the old connection). `false` if it did not come
    /// back.
    fn reload(&mut self, batch: &mut Batch) -> bool {
        if !self.reconnect_network() {
            return false;
        }
        let pending = std::mem::take(&mut batch.pending);
        batch.requests.clear();
        println!(
            "[{}] reloading what was in flight ({}): {}",
            self.me,
            plural(pending.len() as u64, "request", "requests"),
            pending
                .iter()
                .map(|(id, url)| format!("#{id} {}", url.strip_prefix(site::ORIGIN).unwrap_or(url)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut reloaded = true;
        for (request_id, url) in pending {
            // After a failure the rest stay pending, unrequested: `collect`
            // reports them failed.
            if reloaded {
                match self.request(request_id, &url, &batch.done, &batch.progress) {
                    Ok(request) => batch.requests.push((request_id, request)),
                    Err(_) => reloaded = false,
                }
            }
            batch.pending.push((request_id, url));
        }
        reloaded
    }

    /// The page's script reads the account inbox, which the Network process
    /// serves to the signed-in tab only; tells the UI process what came
    /// back (200 and verified, or 403 and the Network process's reason).
    fn check_inbox(&mut self, ui: &mut Context, page_id: u64, deadline: Instant) {
        let url = site::url(INBOX);
        let Some(outcome) = self.fetch(std::slice::from_ref(&url), deadline).pop() else {
            return;
        };
        let (status, detail) = match outcome.status {
            200 if outcome.problems.is_empty() => (
                200,
                format!("{} verified against the site", bytes(outcome.bytes)),
            ),
            403 => (403, outcome.text.unwrap_or_default()),
            status => (status, outcome.problems.join("; ")),
        };
        let checked = DidCheckAccess {
            page_id,
            url,
            status,
            detail,
        };
        let _ = ui.send_with_fds(PROXY, &checked, &[], Some(SEND_TIMEOUT));
    }

    /// The user leaves the page as soon as its subresources start arriving:
    /// every load of `batch` not complete yet is cancelled and its loader
    /// unregistered (what is already on its way for it is dropped on
    /// arrival). Returns the URLs of the cancelled loads.
    fn navigate_away(&mut self, batch: &mut Batch, page: &str, deadline: Instant) -> Vec<String> {
        // One message at a time: the first piece of body ends the visit.
        while batch.progress.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            if let Err(e) = self.network.dispatch_one(Some(Duration::from_millis(100))) {
                self.failures
                    .push(format!("the Network connection failed: {e}"));
                return Vec::new();
            }
        }
        // What arrived complete meanwhile stays.
        while let Ok(outcome) = batch.outcomes_rx.try_recv() {
            batch.pending.retain(|(id, _)| *id != outcome.request_id);
            batch.outcomes.push(outcome);
        }
        let mut cancelled = Vec::new();
        for (request_id, url) in std::mem::take(&mut batch.pending) {
            let request = batch.requests.iter().find(|(id, _)| *id == request_id);
            if let Some((_, request)) = request {
                if let Err(e) = self.network.cancel(*request) {
                    self.failures
                        .push(format!("cancelling load {request_id} failed: {e}"));
                }
            }
            self.network.unregister::<WebResourceLoader>(request_id);
            cancelled.push(url);
        }
        println!(
            "[{}] navigated away from {} mid-load: cancelled its {} not finished here; back again, reloading them",
            self.me,
            page.trim_start_matches(site::ORIGIN),
            plural(
                cancelled.len() as u64,
                "subresource load",
                "subresource loads"
            )
        );
        self.navigated_away = Some((page.to_owned(), cancelled.len()));
        cancelled
    }

    /// Waits for a batch's loads; outcomes in request order.
    fn finish(&mut self, batch: &mut Batch, deadline: Instant) -> Vec<Outcome> {
        self.collect(batch, deadline);
        let mut outcomes = std::mem::take(&mut batch.outcomes);
        outcomes.sort_by_key(|o| o.request_id);
        outcomes
    }

    /// Dispatches the Network connection until every pending load reported.
    fn collect(&mut self, batch: &mut Batch, deadline: Instant) {
        loop {
            while let Ok(outcome) = batch.outcomes_rx.try_recv() {
                batch.pending.retain(|(id, _)| *id != outcome.request_id);
                batch.outcomes.push(outcome);
            }
            if batch.pending.is_empty() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let failure = if left.is_zero() {
                Some("no LoadFinished before the page's deadline".to_owned())
            } else {
                match self
                    .network
                    .dispatch(Some(left.min(Duration::from_secs(1))))
                {
                    Ok(_) => None,
                    Err(e) if peer_gone(&e) && self.reload(batch) => continue,
                    Err(e) => Some(format!("the Network connection failed: {e}")),
                }
            };
            if let Some(failure) = failure {
                for (request_id, url) in batch.pending.drain(..) {
                    self.network.unregister::<WebResourceLoader>(request_id);
                    batch
                        .outcomes
                        .push(Outcome::failed(request_id, &url, failure.clone()));
                }
                return;
            }
        }
    }

    /// Waits (boundedly) until the jar holds every WebContent process's
    /// visitor cookie: cookies set by one process are seen by all.
    fn check_shared_cookies(&mut self) -> String {
        let wanted: Vec<String> = (0..self.web).map(Self::visitor_cookie).collect();
        let deadline = Instant::now() + COOKIE_WAIT;
        let url = site::url("/");
        loop {
            let Some(header) = self.read_cookies(&url) else {
                return "cookies: the jar could not be read".into();
            };
            let names: Vec<&str> = header
                .split("; ")
                .filter_map(|c| c.split('=').next())
                .collect();
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|w| !names.contains(&w.as_str()))
                .collect();
            if missing.is_empty() {
                return format!(
                    "the jar shows all {} visitor cookies ({} cookies)",
                    wanted.len(),
                    names.len()
                );
            }
            if Instant::now() >= deadline {
                self.failures.push(format!(
                    "cookies set by other WebContent processes never appeared: {missing:?} (jar: {header})"
                ));
                return format!("cookies: missing {missing:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Outcome {
    fn failed(request_id: u64, url: &str, problem: String) -> Outcome {
        Outcome {
            request_id,
            url: url.to_owned(),
            status: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            text: None,
            problems: vec![problem],
        }
    }
}

/// One resource load: the `WebResourceLoader` registered at its request id.
/// It checks the response against the embedded site as it arrives.
struct Loader {
    request_id: u64,
    expected: Option<&'static Resource>,
    started: Instant,
    done: Sender<Outcome>,
    /// Body bytes received by every loader of its batch.
    progress: Arc<AtomicU64>,
    /// What has arrived (handlers take `&self`; none of them calls out, so
    /// a borrow never spans a re-entrant dispatch).
    state: RefCell<Arrived>,
}

/// What a load has received so far.
#[derive(Default)]
struct Arrived {
    url: String,
    response: Option<(u16, String, u64)>,
    hash: BodyHash,
    /// The body of a text resource (documents and scripts are parsed).
    text: Option<Vec<u8>>,
    problems: Vec<String>,
}

impl WebResourceLoaderHandler for Loader {
    fn response_started(&self, _: &mut Context, m: &ArchivedResponseStarted) {
        let mut state = self.state.borrow_mut();
        if state.response.is_some() {
            state.problems.push("a second ResponseStarted".into());
        }
        let (status, mime) = (m.status.to_native(), m.mime_type.as_str());
        state.response = Some((status, mime.to_owned(), m.content_length.to_native()));
        if mime.starts_with("text/") {
            state.text = Some(Vec::new());
        }
    }

    fn data_received(&self, _: &mut Context, m: &ArchivedDataReceived) {
        let mut state = self.state.borrow_mut();
        if state.response.is_none() {
            state
                .problems
                .push("DataReceived before ResponseStarted".into());
        }
        // Read in place: in the ring, or in the sealed memfd of an
        // out-of-line body.
        let data = m.data.as_slice();
        self.progress
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        state.hash.update(data);
        if let Some(text) = &mut state.text {
            text.extend_from_slice(data);
        }
    }

    fn load_finished(&self, connection: &mut Context, m: &ArchivedLoadFinished) {
        let elapsed = self.started.elapsed();
        let mut state = self.state.take();
        state.verify(self.expected, m.sent.to_native());
        connection.unregister::<WebResourceLoader>(self.request_id);
        let (status, ..) = state.response.clone().unwrap_or_default();
        let outcome = Outcome {
            request_id: self.request_id,
            url: state.url,
            status,
            bytes: state.hash.len(),
            elapsed,
            text: state.text.map(|t| String::from_utf8_lossy(&t).into_owned()),
            problems: state.problems,
        };
        let _ = self.done.send(outcome);
    }
}

impl Arrived {
    /// Checks the whole response against the embedded site.
    fn verify(&mut self, expected: Option<&Resource>, sent: u64) {
        let received = self.hash.len();
        let Some((status, mime, length)) = self.response.clone() else {
            self.problems.push("LoadFinished without a response".into());
            return;
        };
        if sent != received {
            self.problems.push(format!(
                "the Network process sent {sent} bytes, {received} arrived"
            ));
        }
        match expected {
            Some(resource) => {
                let expected_len = resource.body.len() as u64;
                if status != 200 {
                    self.problems.push(format!("status {status}, expected 200"));
                }
                if mime != resource.mime {
                    self.problems
                        .push(format!("type {mime:?}, expected {:?}", resource.mime));
                }
                if length != expected_len || received != expected_len {
                    self.problems.push(format!(
                        "{received} bytes received ({length} announced), the site has {expected_len}"
                    ));
                } else if self.hash.finish() != resource.hash {
                    self.problems
                        .push("the body differs from the embedded site's (hash mismatch)".into());
                }
            }
            None => {
                if status != 404 || received != 0 {
                    self.problems.push(format!(
                        "status {status} with {received} bytes for a resource the site does not have (expected 404)"
                    ));
                }
            }
        }
    }
}

/// The `WebPage` receiver: navigations from the UI process.
struct PageHandler {
    page: Arc<Mutex<Page>>,
}

impl WebPageHandler for PageHandler {
    fn load_url(&self, ui: &mut Context, m: &ArchivedLoadUrl) {
        lock(&self.page).load(ui, m.page_id.to_native(), m.url.as_str());
    }
}

/// What the GPU stream did.
#[derive(Default)]
struct StreamReport {
    peer: String,
    commands: u64,
    frames: u64,
    acknowledged: u64,
    streaming: Duration,
    failures: Vec<String>,
    stats: TransportStats,
}

/// Streams frames of small drawing commands to the GPU process until told
/// to stop, at most `fps` frames a second (0: no pacing), with at most
/// [`FRAMES_IN_FLIGHT`] frames unacknowledged, and checks each
/// acknowledgment.
fn stream(mut gpu: Connection, stop: &AtomicBool, frame_commands: u32, fps: u32) -> StreamReport {
    let mut report = StreamReport {
        peer: gpu.config().peer_name.clone(),
        ..StreamReport::default()
    };
    let (acks_tx, acks) = mpsc::channel();
    let mut in_flight: VecDeque<(u64, u64, u64)> = VecDeque::new();
    let interval = (fps > 0).then(|| Duration::from_secs(1) / fps);
    let started = Instant::now();
    let mut rng = 0x5eed_u64;
    let mut glyphs = DrawGlyphs {
        x: 0.0,
        y: 0.0,
        glyphs: vec![0; 12],
    };
    let mut frame = 0u64;
    'frames: while !stop.load(Ordering::Acquire) {
        frame += 1;
        let mut checksum = CHECKSUM_SEED;
        for i in 0..frame_commands {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (x, y) = (
                (rng >> 40) as f32 % 1280.0,
                (rng >> 20 & 0xfff) as f32 % 800.0,
            );
            let sent = match i % 4 {
                0 => {
                    let rgba = (rng >> 32) as u32 | 0xff;
                    checksum = fold_fill_color(checksum, rgba);
                    gpu.send_with_fds(BACKEND, &SetFillColor { rgba }, &[], Some(SEND_TIMEOUT))
                }
                1 | 2 => {
                    let (width, height) = (8.0 + (rng & 63) as f32, 4.0 + (rng >> 6 & 31) as f32);
                    checksum = fold_fill_rect(checksum, x, y, width, height);
                    let rect = FillRect {
                        x,
                        y,
                        width,
                        height,
                    };
                    gpu.send_with_fds(BACKEND, &rect, &[], Some(SEND_TIMEOUT))
                }
                _ => {
                    glyphs.x = x;
                    glyphs.y = y;
                    for (k, glyph) in glyphs.glyphs.iter_mut().enumerate() {
                        *glyph = (rng >> (k * 5) & 0x7f) as u16 + 32;
                    }
                    checksum = fold_glyphs(checksum, x, y, glyphs.glyphs.iter().copied());
                    gpu.send_with_fds(BACKEND, &glyphs, &[], Some(SEND_TIMEOUT))
                }
            };
            if let Err(e) = sent {
                report
                    .failures
                    .push(format!("streaming to the GPU process failed: {e}"));
                break 'frames;
            }
            report.commands += 1;
        }
        let commands = u64::from(frame_commands);
        let acks_tx: Sender<Result<(u64, u64, u64), String>> = acks_tx.clone();
        let flush = Flush {
            frame,
            commands,
            checksum,
        };
        let flushed = gpu.send_with_reply(BACKEND, &flush, move |_, reply| {
            let ack = reply
                .map(|r| {
                    (
                        r.frame.to_native(),
                        r.commands.to_native(),
                        r.checksum.to_native(),
                    )
                })
                .map_err(|e| e.to_string());
            let _ = acks_tx.send(ack);
        });
        if let Err(e) = flushed {
            report.failures.push(format!("Flush failed: {e}"));
            break;
        }
        report.frames += 1;
        in_flight.push_back((frame, commands, checksum));
        if !wait_for_acks(
            &mut gpu,
            &acks,
            &mut in_flight,
            FRAMES_IN_FLIGHT - 1,
            &mut report,
        ) {
            break;
        }
        if let Some(interval) = interval {
            let next = started + interval * frame as u32;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
    }
    wait_for_acks(&mut gpu, &acks, &mut in_flight, 0, &mut report);
    report.streaming = started.elapsed();
    report.stats = gpu.stats();
    report
}

/// Dispatches the GPU connection until at most `max_in_flight` frames are
/// unacknowledged; checks each acknowledgment. `false` if the stream broke.
fn wait_for_acks(
    gpu: &mut Connection,
    acks: &Receiver<Result<(u64, u64, u64), String>>,
    in_flight: &mut VecDeque<(u64, u64, u64)>,
    max_in_flight: usize,
    report: &mut StreamReport,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while let Ok(ack) = acks.try_recv() {
            let expected = in_flight.pop_front();
            match (ack, expected) {
                (Ok(got), Some(sent)) if got == sent => report.acknowledged += 1,
                (Ok(got), sent) => {
                    report.failures.push(format!(
                        "the GPU process acknowledged (frame, commands, checksum) {got:?}, we sent {sent:?}"
                    ));
                    return false;
                }
                (Err(e), _) => {
                    report
                        .failures
                        .push(format!("no acknowledgment from the GPU process: {e}"));
                    return false;
                }
            }
        }
        if in_flight.len() <= max_in_flight {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            report.failures.push(format!(
                "{} frames unacknowledged after 5 s",
                in_flight.len()
            ));
            return false;
        }
        if let Err(e) = gpu.dispatch(Some(left.min(Duration::from_millis(100)))) {
            report
                .failures
                .push(format!("the GPU connection failed: {e}"));
            return false;
        }
    }
}

/// The `AuxiliaryProcess` receiver: stops the stream, checks the shared
/// cookies, and reports.
struct Reporter {
    page: Arc<Mutex<Page>>,
    stream: RefCell<Option<(Arc<AtomicBool>, JoinHandle<StreamReport>)>>,
    done: Arc<AtomicBool>,
}

impl AuxiliaryProcessHandler for Reporter {
    fn shutdown(&self, _: &mut Context, _: &ArchivedShutdown) -> ProcessSummary {
        self.done.store(true, Ordering::Release);
        let stream = self.stream.take();
        let gpu = match stream {
            Some((stop, handle)) => {
                stop.store(true, Ordering::Release);
                handle.join().unwrap_or_else(|_| StreamReport {
                    failures: vec!["the GPU stream thread panicked".into()],
                    ..StreamReport::default()
                })
            }
            None => StreamReport::default(),
        };
        let mut page = lock(&self.page);
        let cookies = page.check_shared_cookies();
        let network = page.network.stats();
        let mut failures = std::mem::take(&mut page.failures);
        failures.extend(gpu.failures.iter().cloned());
        let mut lines = vec![
            format!(
                "{}: {} verified against the site ({}), {} missing as expected (404)",
                plural(page.pages, "page", "pages"),
                plural(page.verified, "resource", "resources"),
                bytes(page.body_bytes),
                page.missing
            ),
            format!("resource loads   {}", page.loads.summary()),
            format!("sync GetCookies  {}", page.cookie_calls.summary()),
            format!(
                "introduced to {} and {} in {}; webcontent {}; {cookies}",
                page.network.config().peer_name,
                gpu.peer,
                duration(page.introduced_in.as_nanos() as u64),
                if page.denied {
                    "denied by policy"
                } else {
                    "NOT denied"
                },
            ),
            format!(
                "gpu stream: {} in {}, {} acknowledged; {} commands/s",
                plural(gpu.commands, "command", "commands"),
                plural(gpu.frames, "frame", "frames"),
                if gpu.acknowledged == gpu.frames {
                    "all".to_owned()
                } else {
                    count(gpu.acknowledged)
                },
                rate(gpu.commands, gpu.streaming).trim_end_matches("/s")
            ),
            match &page.navigated_away {
                Some((url, cancelled)) => format!(
                    "navigated away from {} mid-load: {} cancelled; {} for them dropped on arrival, {} dropped",
                    url.trim_start_matches(site::ORIGIN),
                    plural(*cancelled as u64, "load", "loads"),
                    plural(network.dropped_for_gone_destinations, "message", "messages"),
                    plural(network.late_replies_dropped, "late answer", "late answers")
                ),
                None => "never left a page mid-load".to_owned(),
            },
            format!("to network: {}", report::traffic(&network)),
        ];
        lines.extend(page.reconnects.iter().cloned());
        lines.extend([format!("to gpu:     {}", report::traffic(&gpu.stats))]);
        ProcessSummary {
            process: page.me.clone(),
            pid: std::process::id(),
            lines,
            failures,
            out_of_line_sent: network.out_of_line_sent + gpu.stats.out_of_line_sent,
            peers_closed: Vec::new(),
        }
    }
}
