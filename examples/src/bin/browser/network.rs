//! The Network process: serves the embedded site to WebContent processes and
//! owns the cookie jar.
//!
//! Each WebContent connection (created by the [`Acceptor`] when the broker
//! asks) is served on a thread of its own. `LoadResource` only queues the
//! request; the thread then streams every queued response a step at a time,
//! round robin (`ResponseStarted`, `DataReceived` pieces, `LoadFinished`),
//! so a page's subresources travel interleaved, each addressed to the
//! requester's `WebResourceLoader` by the requester's request id. A body of
//! [`LARGE_BODY`] or more goes in one `DataReceived`, larger than the
//! ring's inline maximum, so the transport sends it out of line.
//!
//! Each `LoadResource` is answered when its load is complete, through the
//! reply handle its handler keeps with the load: a WebContent process that
//! leaves a page mid-load cancels the request, the handle says so, and the
//! thread stops streaming that load and reports it cancelled.
//!
//! `GetCookies` is answered by the cookie store's own thread: its handler
//! hands the reply handle over and returns (WebKit's completion handler);
//! the connection's thread sends the answer when the handle is used.
//!
//! When a WebContent process goes away (its connection hangs up), the
//! thread drops that process's queued requests and reports them.
//!
//! Access control: each connection knows which WebContent process it belongs
//! to (the broker names the requester in the introduction; the requester
//! cannot choose it). The UI process restricts a resource to one tab
//! (`RestrictResource`); the others get a 403 with the reason.
//!
//! A WebContent process that sends something that is no message of the
//! schema (a protocol violation) is cut off (its connection closed) and
//! reported to the broker, whose policy decides what becomes of it.

use crate::Args;
use crate::child::{Service, lock, open_ui_connection, peer_gone, serve_ui};
use crate::protocol::*;
use crate::report::{self, bytes, count, duration, plural};
use crate::site::{Resource, site};
use ferry_handoff::{BrokerClient, ClientEvent, PeerId};
use ferry_transport::Context;
use ferry_transport::{
    Accepted, Acceptor, Connection, DispatchError, Remote, ReplyHandle, SendError, TransportStats,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a response waits for room in a WebContent process's ring.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a report to the broker waits for room in its channel.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the Network process shares between its threads.
#[derive(Default)]
struct Network {
    service: Arc<Service>,
    /// The cookie jar, by name (the demo has one site, so one domain).
    jar: Mutex<BTreeMap<String, String>>,
    cookie_reads: Mutex<u64>,
    cookie_writes: Mutex<u64>,
    /// Hands `GetCookies` reply handles to the cookie store's thread.
    cookie_store: OnceLock<Sender<ReplyHandle<Cookies>>>,
    /// One record per WebContent connection that has ended.
    peers: Mutex<Vec<PeerRecord>>,
    /// Peers the broker told us are gone.
    gone: Mutex<Vec<String>>,
    /// Resources only one WebContent process may load: URL → its broker
    /// instance id (from the UI process).
    restricted: Mutex<BTreeMap<String, u64>>,
    /// Loads of a restricted resource: (who, served or refused).
    access: Mutex<Vec<(String, bool)>>,
    failures: Mutex<Vec<String>>,
}

/// What one WebContent connection did.
struct PeerRecord {
    peer: String,
    requests: u64,
    completed: u64,
    /// Loads the WebContent process cancelled before they were complete.
    cancelled: u64,
    dropped: Vec<u64>,
    body_bytes: u64,
    large_bodies: u64,
    /// Time spent sending them (serializing, filling and sealing the memfd).
    large_send_time: Duration,
    max_inline: usize,
    stats: TransportStats,
    ended: String,
}

pub fn run(args: &Args) -> Result<(), String> {
    let network = Arc::new(Network::default());
    let (jobs, cookie_jobs) = mpsc::channel();
    let _ = network.cookie_store.set(jobs);
    let store = network.clone();
    std::thread::Builder::new()
        .name("cookie store".into())
        .spawn(move || cookie_store(&store, cookie_jobs))
        .map_err(|e| format!("cannot start the cookie store: {e}"))?;
    let (acceptor, accepted) = Acceptor::new(network_service(args.wait));
    let events = network.clone();
    let client = Arc::new(
        BrokerClient::builder()
            .handler(acceptor)
            .on_event(move |event| {
                if let ClientEvent::PeerGone(peer) = event {
                    lock(&events.gone).push(peer.to_string());
                }
            })
            .from_env()
            .map_err(|e| format!("no broker: {e}"))?,
    );
    let me = client.identity().to_string();
    let mut ui = open_ui_connection(&client, child_side_of_ui(args.wait, UI_NETWORK_SCHEMA))?;
    // Build the site before the first request arrives.
    let (resources, size) = site().size();
    println!(
        "[{me}] pid {}: serving {resources} resources ({})",
        std::process::id(),
        bytes(size as u64)
    );

    let serving = network.clone();
    let broker = client.clone();
    let acceptor_thread = network
        .service
        .clone()
        .accept_loop(accepted, move |accepted| {
            serve(accepted, serving.clone(), &broker)
        });
    let done = Arc::new(AtomicBool::new(false));
    ui.register(
        0,
        NetworkProcess::handler(Rules {
            network: network.clone(),
        }),
    );
    ui.register(
        0,
        AuxiliaryProcess::handler(Reporter {
            me,
            network: network.clone(),
            done: done.clone(),
        }),
    );
    let result = serve_ui(&mut ui, &done, Duration::from_secs(args.timeout));
    network.service.stop(Duration::from_secs(1));
    drop(client);
    let _ = acceptor_thread.join();
    result
}

/// The cookie store's thread: answers each `GetCookies` whose reply handle
/// the connections' threads hand it, until the process ends.
fn cookie_store(network: &Network, jobs: Receiver<ReplyHandle<Cookies>>) {
    for reply in jobs {
        let header = lock(&network.jar)
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        if reply.reply(&Cookies { header }) {
            *lock(&network.cookie_reads) += 1;
        }
    }
}

/// One queued response.
struct Load {
    request_id: u64,
    url: String,
    resource: Option<&'static Resource>,
    /// Why the requester may not have it (a 403 with this text as body).
    refusal: Option<Arc<str>>,
    started: bool,
    offset: usize,
    /// Answered when the load is complete; says whether it was cancelled.
    reply: ReplyHandle<ResourceLoaded>,
}

impl Load {
    /// Whether the next step sends a body of [`LARGE_BODY`] or more.
    fn large_body_next(&self) -> bool {
        self.started
            && self.offset == 0
            && self.resource.is_some_and(|r| r.body.len() >= LARGE_BODY)
    }
}

/// What the handler and the connection's thread share (one thread uses it;
/// the mutex only makes the handler `Send`).
#[derive(Default)]
struct Queue {
    loads: VecDeque<Load>,
    requests: u64,
}

/// The `NetworkConnection` receiver of one WebContent connection.
struct Handler {
    /// Whom the connection belongs to, as the broker named it.
    peer: PeerId,
    queue: Arc<Mutex<Queue>>,
    network: Arc<Network>,
}

impl Handler {
    /// Why `self.peer` may not load `url`, if it may not: the UI process
    /// restricted it to another WebContent process.
    fn refusal(&self, url: &str) -> Option<Arc<str>> {
        let owner = *lock(&self.network.restricted).get(url)?;
        let allowed = self.peer.service == "webcontent" && self.peer.instance.0 == owner;
        lock(&self.network.access).push((self.peer.to_string(), allowed));
        if allowed {
            return None;
        }
        let reason = format!(
            "403 Forbidden: {url} belongs to the tab signed in as webcontent#{owner}; this connection is {}'s (named by the broker)",
            self.peer
        );
        println!(
            "[network] REFUSED {url} to {}: only webcontent#{owner} may load it",
            self.peer
        );
        Some(reason.into())
    }
}

impl NetworkConnectionHandler for Handler {
    fn load_resource(
        &self,
        _: &mut Context,
        message: &ArchivedLoadResource,
        reply: ReplyHandle<ResourceLoaded>,
    ) {
        let url = message.url.as_str();
        let refusal = self.refusal(url);
        let mut queue = lock(&self.queue);
        queue.requests += 1;
        queue.loads.push_back(Load {
            request_id: message.request_id.to_native(),
            url: url.to_owned(),
            resource: site().get(url),
            refusal,
            started: false,
            offset: 0,
            reply,
        });
    }

    fn get_cookies(&self, _: &mut Context, _: &ArchivedGetCookies, reply: ReplyHandle<Cookies>) {
        // The cookie store's thread answers; the jar's lock is never taken
        // on this connection's thread for a read. (Were the thread gone,
        // dropping the handle would answer with an error.)
        if let Some(store) = self.network.cookie_store.get() {
            let _ = store.send(reply);
        }
    }

    fn set_cookie(&self, _: &mut Context, message: &ArchivedSetCookie) {
        *lock(&self.network.cookie_writes) += 1;
        if let Some((name, value)) = message.cookie.as_str().split_once('=') {
            lock(&self.network.jar).insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }
}

/// Serves one WebContent connection until it closes, the peer sends garbage
/// (then it is cut off and reported to the broker) or the process stops.
fn serve(accepted: Accepted, network: Arc<Network>, broker: &BrokerClient) {
    let Accepted {
        peer,
        mut connection,
    } = accepted;
    let queue = Arc::new(Mutex::new(Queue::default()));
    connection.register(
        0,
        NetworkConnection::handler(Handler {
            peer: peer.clone(),
            queue: queue.clone(),
            network: network.clone(),
        }),
    );
    let mut record = PeerRecord {
        peer: peer.to_string(),
        requests: 0,
        completed: 0,
        cancelled: 0,
        dropped: Vec::new(),
        body_bytes: 0,
        large_bodies: 0,
        large_send_time: Duration::ZERO,
        max_inline: connection.max_inline_payload(),
        stats: TransportStats::default(),
        ended: String::new(),
    };
    record.ended = loop {
        let busy = !lock(&queue).loads.is_empty();
        let wait = if busy {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        };
        match connection.dispatch(Some(wait)) {
            Ok(_) => {}
            Err(e) if peer_gone(&e) => break "connection closed".to_owned(),
            Err(DispatchError::ProtocolViolation { violation, .. }) => {
                // Garbage from an untrusted peer: stop reading it (the
                // connection closes when this thread returns) and let the
                // broker's policy decide about the process.
                let what = format!("sent a frame that is no message of the schema: {violation}");
                let reported = match broker.report(&peer, &what, REPORT_TIMEOUT) {
                    Ok(()) => "reported it to the broker".to_owned(),
                    Err(e) => format!("could not report it to the broker: {e}"),
                };
                println!("[network] CUT OFF {peer}: it {what}; {reported}");
                break format!("cut off: it {what}; {reported}");
            }
            Err(e) => {
                lock(&network.failures).push(format!("{peer}: {e}"));
                break format!("failed: {e}");
            }
        }
        if network.service.stopping() {
            break "still open at shutdown".to_owned();
        }
        stop_cancelled(&peer.to_string(), &queue, &mut record);
        match serve_round(&mut connection, &queue, &mut record) {
            Ok(()) => {}
            Err(SendError::Disconnected) => break "connection closed".to_owned(),
            Err(e) => {
                lock(&network.failures).push(format!("{peer}: sending a response failed: {e}"));
                break format!("failed: {e}");
            }
        }
    };
    let queue = lock(&queue);
    record.requests = queue.requests;
    record.dropped = queue.loads.iter().map(|load| load.request_id).collect();
    record.stats = connection.stats();
    if !record.dropped.is_empty() {
        println!(
            "[network] {peer} went away with {} in flight: dropped {}",
            plural(record.dropped.len() as u64, "request", "requests"),
            queue
                .loads
                .iter()
                .map(|load| format!("#{} {}", load.request_id, load.url))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    lock(&network.peers).push(record);
}

/// Stops streaming the loads their requester cancelled (it left the page
/// mid-load), and says which.
fn stop_cancelled(peer: &str, queue: &Mutex<Queue>, record: &mut PeerRecord) {
    let mut queue = lock(queue);
    if !queue.loads.iter().any(|load| load.reply.is_cancelled()) {
        return;
    }
    let mut stopped = Vec::new();
    queue.loads.retain(|load| {
        if !load.reply.is_cancelled() {
            return true;
        }
        let size = load.resource.map_or(0, |r| r.body.len());
        stopped.push(format!(
            "#{} {} ({} of {} sent)",
            load.request_id,
            load.url.trim_start_matches(crate::site::ORIGIN),
            bytes(load.offset as u64),
            bytes(size as u64)
        ));
        false
    });
    record.cancelled += stopped.len() as u64;
    println!(
        "[network] {peer} cancelled {} mid-load: stopped streaming {}",
        plural(stopped.len() as u64, "load", "loads"),
        stopped.join(", ")
    );
}

/// Sends one step of every queued response, in order.
fn serve_round(
    connection: &mut Connection,
    queue: &Mutex<Queue>,
    record: &mut PeerRecord,
) -> Result<(), SendError> {
    let loads = std::mem::take(&mut lock(queue).loads);
    // Like a browser's network stack, send what blocks rendering (documents,
    // style sheets, scripts, small images) before a large image's body.
    let small_pending = loads.iter().any(|load| !load.large_body_next());
    let mut loads = loads.into_iter();
    let mut unfinished = VecDeque::with_capacity(loads.len());
    let mut outcome = Ok(());
    while let Some(mut load) = loads.next() {
        if small_pending && load.large_body_next() {
            unfinished.push_back(load);
            continue;
        }
        match step(connection, &mut load, record) {
            Ok(true) => {
                // Complete: the request's answer (sent by this thread at its
                // next dispatch).
                load.reply.reply(&ResourceLoaded {
                    sent: load.offset as u64,
                });
            }
            Ok(false) => unfinished.push_back(load),
            Err(e) => {
                // What is left stays queued, so it is counted as dropped.
                unfinished.push_back(load);
                unfinished.extend(loads.by_ref());
                outcome = Err(e);
            }
        }
    }
    let mut queue = lock(queue);
    unfinished.extend(queue.loads.drain(..));
    queue.loads = unfinished;
    outcome
}

/// Sends the next message of one response; `true` once it is complete.
fn step(
    connection: &mut Connection,
    load: &mut Load,
    record: &mut PeerRecord,
) -> Result<bool, SendError> {
    let loader = Remote::<WebResourceLoader>::new(load.request_id);
    let refusal = load.refusal.clone();
    let body: &[u8] = match &refusal {
        Some(reason) => reason.as_bytes(),
        None => load.resource.map_or(&[], |r| &r.body),
    };
    if !load.started {
        let response = match load.resource {
            _ if refusal.is_some() => ResponseStarted {
                status: 403,
                mime_type: "text/plain; charset=utf-8".to_owned(),
                content_length: body.len() as u64,
            },
            Some(resource) => ResponseStarted {
                status: 200,
                mime_type: resource.mime.to_owned(),
                content_length: body.len() as u64,
            },
            None => ResponseStarted {
                status: 404,
                mime_type: "text/html; charset=utf-8".to_owned(),
                content_length: 0,
            },
        };
        connection.send_with_fds(loader, &response, &[], Some(SEND_TIMEOUT))?;
        load.started = true;
        Ok(false)
    } else if load.offset < body.len() {
        let end = if body.len() >= LARGE_BODY {
            body.len()
        } else {
            (load.offset + CHUNK).min(body.len())
        };
        let sending = Instant::now();
        // The one copy on this side: the message owns its bytes.
        let data = DataReceived {
            data: body[load.offset..end].to_vec(),
        };
        connection.send_with_fds(loader, &data, &[], Some(SEND_TIMEOUT))?;
        if end - load.offset >= LARGE_BODY {
            record.large_bodies += 1;
            record.large_send_time += sending.elapsed();
        }
        record.body_bytes += (end - load.offset) as u64;
        load.offset = end;
        Ok(false)
    } else {
        let finished = LoadFinished {
            sent: load.offset as u64,
        };
        connection.send_with_fds(loader, &finished, &[], Some(SEND_TIMEOUT))?;
        record.completed += 1;
        Ok(true)
    }
}

/// The `NetworkProcess` receiver: rules from the UI process.
struct Rules {
    network: Arc<Network>,
}

impl NetworkProcessHandler for Rules {
    fn restrict_resource(
        &self,
        _: &mut Context,
        m: &ArchivedRestrictResource,
    ) -> ResourceRestricted {
        lock(&self.network.restricted).insert(m.url.as_str().to_owned(), m.instance.to_native());
        ResourceRestricted {}
    }
}

/// The `AuxiliaryProcess` receiver: the summary at shutdown.
struct Reporter {
    me: String,
    network: Arc<Network>,
    done: Arc<AtomicBool>,
}

impl AuxiliaryProcessHandler for Reporter {
    fn shutdown(&self, _: &mut Context, _: &ArchivedShutdown) -> ProcessSummary {
        self.done.store(true, Ordering::Release);
        let failures = self.network.service.shut_down(&self.network.failures);
        let peers = lock(&self.network.peers);
        let total = report::total(peers.iter().map(|peer| &peer.stats));
        let requests: u64 = peers.iter().map(|p| p.requests).sum();
        let completed: u64 = peers.iter().map(|p| p.completed).sum();
        let cancelled: u64 = peers.iter().map(|p| p.cancelled).sum();
        let dropped: usize = peers.iter().map(|p| p.dropped.len()).sum();
        let body: u64 = peers.iter().map(|p| p.body_bytes).sum();
        let large: u64 = peers.iter().map(|p| p.large_bodies).sum();
        let large_time: Duration = peers.iter().map(|p| p.large_send_time).sum();
        let max_inline = peers.iter().map(|p| p.max_inline).max().unwrap_or(0);
        let jar = lock(&self.network.jar);
        let mut lines = vec![
            format!(
                "{} accepted (introduced by the broker); {}: {} completed, {} cancelled by their page, {} dropped",
                plural(
                    peers.len() as u64,
                    "WebContent connection",
                    "WebContent connections"
                ),
                plural(requests, "request", "requests"),
                count(completed),
                cancelled,
                dropped
            ),
            if large > 0 {
                format!(
                    "{} of bodies sent; {} went in a single message{}, out of line \
                     (the ring's inline maximum is {}), in {}{}",
                    bytes(body),
                    plural(large, "large body", "large bodies"),
                    if large == 1 { "" } else { " each" },
                    bytes(max_inline as u64),
                    duration((large_time.as_nanos() / u128::from(large)) as u64),
                    if large == 1 { "" } else { " each" },
                )
            } else {
                format!("{} of bodies sent, none out of line", bytes(body))
            },
            format!("traffic: {}", report::traffic(&total)),
            format!(
                "cookie jar: {} cookies; {} synchronous reads answered by the cookie store's thread, {} writes",
                jar.len(),
                count(*lock(&self.network.cookie_reads)),
                count(*lock(&self.network.cookie_writes))
            ),
        ];
        let access = lock(&self.network.access);
        let served = access.iter().filter(|(_, allowed)| *allowed).count();
        lines.push(format!(
            "access control: {} restricted to one tab; {served} served, {} refused",
            plural(
                lock(&self.network.restricted).len() as u64,
                "resource",
                "resources"
            ),
            access.len() - served
        ));
        let gone = lock(&self.network.gone);
        for peer in peers.iter() {
            let mut line = format!(
                "{}: {}, {} completed, {} cancelled ({} of its cancels reached a load in progress, {} arrived too late); {}",
                peer.peer,
                plural(peer.requests, "request", "requests"),
                count(peer.completed),
                peer.cancelled,
                peer.stats.cancels_received,
                peer.stats.cancels_ignored,
                peer.ended
            );
            if !peer.dropped.is_empty() {
                let dropped = plural(peer.dropped.len() as u64, "request", "requests");
                line.push_str(&format!(" with {dropped} in flight: dropped"));
                if gone.contains(&peer.peer) {
                    line.push_str("; the broker reported it gone");
                }
            }
            lines.push(line);
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
