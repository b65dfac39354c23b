//! The UI process: the broker. It spawns the children, decides who may talk
//! to whom, provides its own service `ui` (every child connects to it
//! through the broker), drives each WebContent process's navigations,
//! mirrors its pages, kills a process with `--crash`, relaunches the
//! Network process (the broker's restart policy), kills a WebContent
//! process the Network process reports (`--evil`), and at the end collects
//! every process's summary and checks the whole run.
//!
//! Threads: the broker runs on its own ([`Broker::run`]), each WebContent
//! connection has a proxy thread (WebKit's `WebPageProxy`), and the main
//! thread receives what they report over one channel, so it never blocks on
//! a child (except for the Network process's short synchronous
//! `RestrictResource`, answered by its UI-connection thread).

use crate::protocol::*;
use crate::report::{self, bytes, count, duration};
use crate::site::{self, INBOX, site};
use crate::{Args, Crash, Role};
use ferry_handoff::{
    Broker, BrokerEvent, ConnectFailure, ConnectionRequest, Decision, Endpoint, InstanceId, PeerId,
    ReportOutcome, Verdict,
};
use ferry_transport::Context;
use ferry_transport::{
    Connection, DispatchError, Remote, TransportStats, WaitStrategy, decode_request,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

const AUX: Remote<AuxiliaryProcess> = Remote::new(0);
const WEB_PAGE: Remote<WebPage> = Remote::new(0);
const NETWORK_PROCESS: Remote<NetworkProcess> = Remote::new(0);
/// How many times the broker relaunches a crashed Network process.
const NETWORK_RELAUNCHES: u32 = 1;
/// How long a message to a child waits for room.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child has to answer `Shutdown` with its summary.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The broker's policy: every child may reach the UI process's own `ui`
/// service, WebContent processes may reach the Network and GPU processes,
/// and nothing else may be introduced to anything.
fn policy(requester: &PeerId, service: &str) -> Decision {
    match (requester.service.as_str(), service) {
        ("network" | "gpu" | "webcontent", "ui") => Decision::Allow,
        ("webcontent", "network" | "gpu") => Decision::Allow,
        _ => Decision::Deny,
    }
}

/// The broker's report policy (WebKit's: a WebContent process that sends
/// the Network process an invalid message is terminated). Only the Network
/// process may accuse, and only a WebContent process; the broker has already
/// checked that the two were introduced (a child accusing a stranger is cut
/// off itself) and rate-limits each child's reports.
fn judge(accuser: &PeerId, accused: &PeerId, _reason: &str) -> Verdict {
    if accuser.service == "network" && accused.service == "webcontent" {
        Verdict::Terminate
    } else {
        Verdict::Ignore
    }
}

/// The UI process's own service, `ui`: the broker's handler for children
/// that ask for it. It creates the connection with the schema of the
/// requester's role (named by the broker), and hands the UI process's end
/// to the main thread. One connection per child, ever: a second request
/// (a confused or hostile child) is refused before anything is created,
/// so no child can make the UI process hold more than one.
fn ui_service(
    wait: WaitStrategy,
    events: Sender<Event>,
) -> impl FnMut(ConnectionRequest) -> Result<Endpoint, String> + Send + 'static {
    let mut connected = BTreeSet::new();
    move |request: ConnectionRequest| {
        if !connected.insert(request.requester.instance) {
            return Err(format!(
                "{} already has its connection to the UI process",
                request.requester
            ));
        }
        let schema = match request.requester.service.as_str() {
            "webcontent" => UI_WEB_SCHEMA,
            "network" => UI_NETWORK_SCHEMA,
            "gpu" => UI_AUX_SCHEMA,
            other => return Err(format!("the UI process has no connection for {other}")),
        };
        let theirs = decode_request(&request.metadata)
            .ok_or_else(|| String::from("malformed connection request metadata"))?;
        if theirs != schema {
            return Err(format!(
                "schema mismatch: {} has {theirs:#x}, the UI process {schema:#x}",
                request.requester
            ));
        }
        let name = request.requester.to_string();
        let (connection, endpoint) =
            Connection::create(ui_side(wait, schema, &name)).map_err(|e| e.to_string())?;
        events
            .send(Event::UiConnection {
                peer: request.requester,
                connection: Box::new(connection),
            })
            .map_err(|_| String::from("the UI process is shutting down"))?;
        Ok(endpoint)
    }
}

/// A spawned child, as the UI process knows it.
struct Child {
    instance: InstanceId,
    name: String,
    pid: u32,
}

/// What the main thread hears about.
enum Event {
    Broker(BrokerEvent),
    /// A child connected to the UI process's `ui` service.
    UiConnection {
        peer: PeerId,
        connection: Box<Connection>,
    },
    AccessChecked {
        web: usize,
        url: String,
        status: u16,
        detail: String,
    },
    Started {
        web: usize,
        page_id: u64,
        url: String,
    },
    Committed {
        web: usize,
        page_id: u64,
    },
    Finished {
        web: usize,
        page_id: u64,
        title: String,
        resources: u32,
        bytes: u64,
        elapsed_us: u64,
        failures: Vec<String>,
    },
    WebDone {
        web: usize,
        summary: Result<Summary, String>,
        stats: TransportStats,
    },
}

/// A child's summary, out of its archived reply.
#[derive(Debug, Clone)]
struct Summary {
    process: String,
    pid: u32,
    lines: Vec<String>,
    failures: Vec<String>,
    out_of_line_sent: u64,
    peers_closed: Vec<String>,
}

impl Summary {
    fn from_reply(reply: &ArchivedProcessSummary) -> Summary {
        let strings = |list: &ferry_transport::rkyv::vec::ArchivedVec<
            ferry_transport::rkyv::string::ArchivedString,
        >| {
            list.iter()
                .map(|s| s.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        Summary {
            process: reply.process.as_str().to_owned(),
            pid: reply.pid.to_native(),
            lines: strings(&reply.lines),
            failures: strings(&reply.failures),
            out_of_line_sent: reply.out_of_line_sent.to_native(),
            peers_closed: strings(&reply.peers_closed),
        }
    }
}

/// The UI process's mirror of one navigation.
#[derive(Debug, Clone)]
enum PageState {
    Waiting,
    Loading,
    Committed,
    Loaded { title: String, failures: usize },
    Crashed,
}

pub fn run(args: &Args) -> ExitCode {
    match run_ui(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("[ui] FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_ui(args: &Args) -> Result<bool, String> {
    if args.crash == Some(Crash::Webcontent) && args.web < 2 {
        return Err(
            "--crash kills one WebContent process and checks that the others finish: \
                    it needs --web 2 or more"
                .into(),
        );
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let (resources, size) = site().size();
    let (largest, largest_len) = site().largest();
    println!(
        "ferry browser demo: UI process (the broker) pid {}; site {}: {resources} resources, {} (largest {largest}, {})",
        std::process::id(),
        site::ORIGIN,
        bytes(size as u64),
        bytes(largest_len as u64)
    );

    let (events, inbox) = mpsc::channel();
    let mut broker = Broker::new(policy).map_err(|e| format!("cannot create the broker: {e}"))?;
    broker.set_report_policy(judge);
    broker
        .serve("ui", ui_service(args.wait, events.clone()))
        .map_err(|e| format!("cannot provide the ui service: {e}"))?;
    let network = {
        let (exe, args) = (exe.clone(), args.clone());
        let instance = broker
            .spawn_restarting("network", NETWORK_RELAUNCHES, move || {
                child_command(&exe, Role::Network, 0, &args)
            })
            .map_err(|e| format!("cannot spawn the network process: {e}"))?;
        child(&broker, instance)
    };
    let gpu = spawn_child(&mut broker, &exe, Role::Gpu, 0, args)?;
    let mut webs = Vec::new();
    for index in 0..args.web {
        webs.push(spawn_child(
            &mut broker,
            &exe,
            Role::Webcontent,
            index,
            args,
        )?);
    }
    let evil = if args.evil {
        Some(spawn_child(&mut broker, &exe, Role::Evil, args.web, args)?)
    } else {
        None
    };
    println!(
        "[ui] spawned {} with the handoff bootstrap socket; each child reaches the UI process \
         through the broker (its own service \"ui\")",
        [&network, &gpu]
            .into_iter()
            .chain(&webs)
            .map(|c| format!("{} (pid {})", c.name, c.pid))
            .chain(
                evil.iter()
                    .map(|c| format!("{} (pid {}, evil)", c.name, c.pid))
            )
            .collect::<Vec<_>>()
            .join(", ")
    );

    let handle = broker.handle();
    let broker_thread = {
        let events = events.clone();
        std::thread::Builder::new()
            .name("broker".into())
            .spawn(move || {
                let result = broker.run(|event| {
                    let _ = events.send(Event::Broker(event));
                });
                broker.shutdown(Duration::from_secs(5), |event| {
                    let _ = events.send(Event::Broker(event));
                });
                result.map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot start the broker thread: {e}"))?
    };

    let mut ui = Ui::new(args, network, gpu, webs, evil, handle.clone(), events);
    ui.deadline = deadline;
    ui.watch(&inbox, deadline);

    // Every WebContent process is done: collect the services' summaries.
    let network_summary = match ui.services.remove(&ui.network.instance) {
        Some(connection) => shut_down(connection, &ui.network.name),
        None => (
            Err(format!(
                "{} never connected to the UI process",
                ui.network.name
            )),
            TransportStats::default(),
        ),
    };
    let gpu_summary = match ui.services.remove(&ui.gpu.instance) {
        Some(connection) => shut_down(connection, &ui.gpu.name),
        None => (
            Err(format!("{} never connected to the UI process", ui.gpu.name)),
            TransportStats::default(),
        ),
    };
    ui.stats.push(network_summary.1);
    ui.stats.push(gpu_summary.1);
    ui.services.clear();
    handle.stop();
    match broker_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => ui.failures.push(format!("the broker failed: {e}")),
        Err(_) => ui.failures.push("the broker thread panicked".into()),
    }
    while let Ok(event) = inbox.try_recv() {
        ui.on_event(event);
    }
    Ok(ui.finish(network_summary.0, gpu_summary.0, started.elapsed()))
}

/// The URLs WebContent process `web` navigates to: `pages` of them, cycling
/// through the site from a different page for each process.
fn navigations(web: usize, pages: u32) -> Vec<String> {
    (0..pages as usize)
        .map(|n| site::url(site::PAGES[(web + n) % site::PAGES.len()]))
        .collect()
}

/// The command line of a child: this executable in `role`, with the run's
/// settings. Its standard input is `/dev/null`: everything it needs comes
/// through the broker.
fn child_command(exe: &Path, role: Role, index: u32, args: &Args) -> Command {
    let role_name = match role {
        Role::Network => "network",
        Role::Gpu => "gpu",
        Role::Webcontent => "webcontent",
        Role::Evil => "evil",
    };
    let mut command = Command::new(exe);
    command
        .args(["--role", role_name])
        .args(["--index", &index.to_string()])
        .args(["--web", &args.web.to_string()])
        .args(["--pages", &args.pages.to_string()])
        .args(["--cookie-reads", &args.cookie_reads.to_string()])
        .args(["--frame-commands", &args.frame_commands.to_string()])
        .args(["--fps", &args.fps.to_string()])
        .args(["--wait", &args.wait.to_string()])
        .args(["--timeout", &args.timeout.to_string()])
        .stdin(Stdio::null());
    command
}

/// Spawns a child through the broker.
fn spawn_child(
    broker: &mut Broker,
    exe: &Path,
    role: Role,
    index: u32,
    args: &Args,
) -> Result<Child, String> {
    let instance = broker
        .spawn(role.service(), child_command(exe, role, index, args))
        .map_err(|e| format!("cannot spawn the {} process: {e}", role.service()))?;
    Ok(child(broker, instance))
}

/// What the UI process keeps of a child the broker spawned.
fn child(broker: &Broker, instance: InstanceId) -> Child {
    Child {
        instance,
        name: broker
            .peer(instance)
            .map(ToString::to_string)
            .unwrap_or_default(),
        pid: broker.pid(instance).unwrap_or(0),
    }
}

/// Asks a child for its summary; it exits after answering.
fn shut_down(mut connection: Connection, name: &str) -> (Result<Summary, String>, TransportStats) {
    let summary = connection
        .send_sync(AUX, &Shutdown {}, SHUTDOWN_TIMEOUT)
        .map(|reply| Summary::from_reply(&reply))
        .map_err(|e| format!("{name} gave no summary: {e}"));
    (summary, connection.stats())
}

/// The `WebPageProxy` receiver of one WebContent connection: forwards each
/// notification to the main thread and starts the next navigation when one
/// finishes.
struct PageProxy {
    web: usize,
    events: Sender<Event>,
    next: RefCell<VecDeque<(u64, String)>>,
    done: Arc<AtomicBool>,
}

impl WebPageProxyHandler for PageProxy {
    fn did_start_load(&self, _: &mut Context, m: &ArchivedDidStartLoad) {
        let _ = self.events.send(Event::Started {
            web: self.web,
            page_id: m.page_id.to_native(),
            url: m.url.as_str().to_owned(),
        });
    }

    fn did_commit_load(&self, _: &mut Context, m: &ArchivedDidCommitLoad) {
        let _ = self.events.send(Event::Committed {
            web: self.web,
            page_id: m.page_id.to_native(),
        });
    }

    fn did_check_access(&self, _: &mut Context, m: &ArchivedDidCheckAccess) {
        let _ = self.events.send(Event::AccessChecked {
            web: self.web,
            url: m.url.as_str().to_owned(),
            status: m.status.to_native(),
            detail: m.detail.as_str().to_owned(),
        });
    }

    fn did_finish_load(&self, connection: &mut Context, m: &ArchivedDidFinishLoad) {
        let _ = self.events.send(Event::Finished {
            web: self.web,
            page_id: m.page_id.to_native(),
            title: m.title.as_str().to_owned(),
            resources: m.resources.to_native(),
            bytes: m.bytes.to_native(),
            elapsed_us: m.elapsed_us.to_native(),
            failures: m.failures.iter().map(|f| f.as_str().to_owned()).collect(),
        });
        let next = self.next.borrow_mut().pop_front();
        match next {
            Some((page_id, url)) => {
                // If the process is gone, the proxy's next dispatch says so.
                let _ = connection.send_with_fds(
                    WEB_PAGE,
                    &LoadUrl { page_id, url },
                    &[],
                    Some(SEND_TIMEOUT),
                );
            }
            None => self.done.store(true, Ordering::Release),
        }
    }
}

/// Drives one WebContent process through its navigations, then asks for
/// its summary.
fn web_proxy(
    web: usize,
    mut connection: Connection,
    navigations: Vec<String>,
    events: Sender<Event>,
    deadline: Instant,
) {
    let mut next: VecDeque<(u64, String)> = navigations
        .into_iter()
        .enumerate()
        .map(|(i, url)| (i as u64 + 1, url))
        .collect();
    let first = next.pop_front();
    let done = Arc::new(AtomicBool::new(false));
    connection.register(
        0,
        WebPageProxy::handler(PageProxy {
            web,
            events: events.clone(),
            next: RefCell::new(next),
            done: done.clone(),
        }),
    );
    let summary = drive(&mut connection, first, &done, deadline);
    let _ = events.send(Event::WebDone {
        web,
        summary,
        stats: connection.stats(),
    });
}

fn drive(
    connection: &mut Connection,
    first: Option<(u64, String)>,
    done: &AtomicBool,
    deadline: Instant,
) -> Result<Summary, String> {
    match first {
        Some((page_id, url)) => connection
            .send_with_fds(WEB_PAGE, &LoadUrl { page_id, url }, &[], Some(SEND_TIMEOUT))
            .map_err(|e| format!("cannot send LoadUrl: {e}"))?,
        None => done.store(true, Ordering::Release),
    }
    while !done.load(Ordering::Acquire) {
        if Instant::now() >= deadline {
            return Err("timed out".into());
        }
        connection
            .dispatch(Some(Duration::from_millis(250)))
            .map_err(|e| match e {
                DispatchError::Disconnected => {
                    "its connection hung up: the process is gone".to_owned()
                }
                other => other.to_string(),
            })?;
    }
    let reply = connection
        .send_sync(AUX, &Shutdown {}, SHUTDOWN_TIMEOUT)
        .map_err(|e| format!("no summary: {e}"))?;
    Ok(Summary::from_reply(&reply))
}

/// The main thread's view of the run.
struct Ui<'a> {
    args: &'a Args,
    /// The Network process: the current instance (after a relaunch, the
    /// new one).
    network: Child,
    /// Network instances that crashed and were relaunched.
    crashed_networks: Vec<Child>,
    /// How many of the relaunches the broker reported.
    relaunches: usize,
    gpu: Child,
    webs: Vec<Child>,
    /// The `--evil` WebContent process.
    evil: Option<Child>,
    handle: ferry_handoff::BrokerHandle,
    /// When the run gives up.
    deadline: Instant,
    /// Where the page proxies report (cloned for each).
    events: Sender<Event>,
    /// The UI process's connections to the Network and GPU processes, by
    /// instance.
    services: BTreeMap<InstanceId, Connection>,
    /// WebContent connections waiting for the Network process's access
    /// rule to be in force before their first navigation.
    parked: Vec<(usize, Connection)>,
    /// Whether the current Network instance has the access rule.
    restricted: bool,
    /// What each WebContent process's page got for the inbox: status and
    /// detail.
    access: Vec<Option<(u16, String)>>,
    /// Reports the broker passed on: accuser, accused, outcome.
    reports: Vec<(PeerId, PeerId, ReportOutcome)>,
    /// WebContent processes introduced to a relaunched Network process.
    reconnected: BTreeSet<InstanceId>,
    /// Which WebContent process's navigation triggers `--crash`, at the
    /// commit of which of its navigations, and the page it was loading.
    victim: Option<usize>,
    kill_at: u64,
    killed_during: Option<String>,
    pages: Vec<Vec<(String, PageState)>>,
    web_summaries: Vec<Option<Result<Summary, String>>>,
    exits: BTreeMap<InstanceId, Option<ExitStatus>>,
    introductions: usize,
    /// Every introduction made: requester, target.
    introduced: Vec<(PeerId, PeerId)>,
    denials: usize,
    stats: Vec<TransportStats>,
    failures: Vec<String>,
    /// Pages loaded, across WebContent processes.
    loaded: u64,
    loaded_bytes: u64,
}

impl<'a> Ui<'a> {
    fn new(
        args: &'a Args,
        network: Child,
        gpu: Child,
        webs: Vec<Child>,
        evil: Option<Child>,
        handle: ferry_handoff::BrokerHandle,
        events: Sender<Event>,
    ) -> Self {
        let pages: Vec<Vec<(String, PageState)>> = (0..webs.len())
            .map(|web| {
                navigations(web, args.pages)
                    .into_iter()
                    .map(|url| (url, PageState::Waiting))
                    .collect()
            })
            .collect();
        // The victim is the last WebContent process; it dies on its first
        // visit of the gallery, or on its second navigation without one.
        let gallery = site::url("/gallery.html");
        let kill_at = pages
            .last()
            .and_then(|navigations| navigations.iter().position(|(url, _)| *url == gallery))
            .map_or(2.min(u64::from(args.pages)), |n| n as u64 + 1);
        Ui {
            args,
            kill_at,
            network,
            crashed_networks: Vec::new(),
            relaunches: 0,
            gpu,
            evil,
            events,
            deadline: Instant::now() + Duration::from_secs(args.timeout),
            services: BTreeMap::new(),
            parked: Vec::new(),
            restricted: false,
            access: vec![None; webs.len()],
            reports: Vec::new(),
            reconnected: BTreeSet::new(),
            victim: args.crash.map(|_| webs.len() - 1),
            killed_during: None,
            web_summaries: vec![None; webs.len()],
            webs,
            handle,
            pages,
            exits: BTreeMap::new(),
            introductions: 0,
            introduced: Vec::new(),
            denials: 0,
            stats: Vec::new(),
            failures: Vec::new(),
            loaded: 0,
            loaded_bytes: 0,
        }
    }

    /// Handles events until every WebContent process (the evil one too) has
    /// reported and exited and the current Network process is connected,
    /// or the deadline passes.
    fn watch(&mut self, inbox: &Receiver<Event>, deadline: Instant) {
        loop {
            let reported = self.web_summaries.iter().all(Option::is_some);
            let exited = self
                .webs
                .iter()
                .chain(&self.evil)
                .all(|w| self.exits.contains_key(&w.instance));
            let services = self.services.contains_key(&self.network.instance)
                && self.services.contains_key(&self.gpu.instance);
            if reported && exited && services {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let waiting: Vec<&str> = self
                    .webs
                    .iter()
                    .chain(&self.evil)
                    .filter(|w| !self.exits.contains_key(&w.instance))
                    .map(|w| w.name.as_str())
                    .collect();
                self.failures.push(format!(
                    "timed out after {} s; still running: {}",
                    self.args.timeout,
                    waiting.join(", ")
                ));
                return;
            }
            match inbox.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// A child connected to the UI process's own service. A WebContent
    /// process's first navigation waits until the Network process has the
    /// access rule.
    fn on_ui_connection(&mut self, peer: PeerId, connection: Connection) {
        match self.webs.iter().position(|w| w.instance == peer.instance) {
            Some(web) => self.parked.push((web, connection)),
            None => {
                self.services.insert(peer.instance, connection);
            }
        }
        self.restrict_inbox();
        if self.restricted {
            for (web, connection) in std::mem::take(&mut self.parked) {
                self.start_proxy(web, connection);
            }
        }
    }

    /// Tells the current Network process that only the first WebContent
    /// process (the signed-in tab) may load the inbox; again after a
    /// relaunch.
    fn restrict_inbox(&mut self) {
        if self.restricted {
            return;
        }
        let (Some(connection), Some(owner)) = (
            self.services.get_mut(&self.network.instance),
            self.webs.first(),
        ) else {
            return;
        };
        let rule = RestrictResource {
            url: site::url(INBOX),
            instance: owner.instance.0,
        };
        match connection.send_sync(NETWORK_PROCESS, &rule, SEND_TIMEOUT) {
            Ok(_) => {
                self.restricted = true;
                println!(
                    "[ui] told {}: only {} (the signed-in tab) may load {}",
                    self.network.name, owner.name, rule.url
                );
            }
            Err(e) => self.failures.push(format!(
                "{} did not take the access rule: {e}",
                self.network.name
            )),
        }
    }

    /// Starts the page proxy of a WebContent process: its navigations begin.
    fn start_proxy(&mut self, web: usize, connection: Connection) {
        let navigations = navigations(web, self.args.pages);
        let events = self.events.clone();
        let deadline = self.deadline;
        let started = std::thread::Builder::new()
            .name(format!("proxy {}", self.webs[web].name))
            .spawn(move || web_proxy(web, connection, navigations, events, deadline));
        if let Err(e) = started {
            self.failures
                .push(format!("cannot start a page proxy thread: {e}"));
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Broker(event) => self.on_broker_event(event),
            Event::UiConnection { peer, connection } => self.on_ui_connection(peer, *connection),
            Event::AccessChecked {
                web,
                url,
                status,
                detail,
            } => {
                let name = &self.webs[web].name;
                match status {
                    200 => println!("[ui] {name:<14} {url}: served (200): {detail}"),
                    403 => println!(
                        "[ui] {name:<14} {url}: REFUSED by the Network process (403): {detail}"
                    ),
                    other => println!("[ui] {name:<14} {url}: status {other}: {detail}"),
                }
                self.access[web] = Some((status, detail));
            }
            Event::Started { web, page_id, url } => {
                self.set_page(web, page_id, PageState::Loading);
                println!(
                    "[ui] {:<14} page {page_id}/{} loading {url}",
                    self.webs[web].name, self.args.pages
                );
            }
            Event::Committed { web, page_id } => {
                self.set_page(web, page_id, PageState::Committed);
                // `--crash`: kill the victim once the gallery page (the
                // 3 MiB image) has requested its subresources, so the
                // Network process has its requests in flight.
                if self.victim == Some(web)
                    && page_id == self.kill_at
                    && self.killed_during.is_none()
                {
                    let url = self.pages[web][page_id as usize - 1].0.clone();
                    if self.args.crash == Some(Crash::Network) {
                        println!(
                            "[ui] --crash network: killing {} (pid {}) with SIGKILL while {}'s subresources of {url} load",
                            self.network.name, self.network.pid, self.webs[web].name
                        );
                        self.handle.kill(self.network.instance);
                    } else {
                        println!(
                            "[ui] --crash: killing {} (pid {}) with SIGKILL while its subresources of {url} load",
                            self.webs[web].name, self.webs[web].pid
                        );
                        self.handle.kill(self.webs[web].instance);
                    }
                    self.killed_during = Some(url);
                }
            }
            Event::Finished {
                web,
                page_id,
                title,
                resources,
                bytes: page_bytes,
                elapsed_us,
                failures,
            } => {
                let verdict = if failures.is_empty() {
                    "verified".to_owned()
                } else {
                    format!("{} PROBLEMS", failures.len())
                };
                println!(
                    "[ui] {:<14} page {page_id}/{} loaded  \"{title}\": {resources} subresources, {}, {}, {verdict}",
                    self.webs[web].name,
                    self.args.pages,
                    bytes(page_bytes),
                    duration(elapsed_us * 1000),
                );
                for failure in &failures {
                    println!("[ui]     {failure}");
                }
                self.loaded += 1;
                self.loaded_bytes += page_bytes;
                self.set_page(
                    web,
                    page_id,
                    PageState::Loaded {
                        title,
                        failures: failures.len(),
                    },
                );
            }
            Event::WebDone {
                web,
                summary,
                stats,
            } => {
                if let Err(e) = &summary {
                    if self.victim == Some(web) && self.killed_during.is_some() {
                        println!("[ui] {}: {e}", self.webs[web].name);
                    } else {
                        println!("[ui] {} FAILED: {e}", self.webs[web].name);
                    }
                }
                self.web_summaries[web] = Some(summary);
                self.stats.push(stats);
            }
        }
    }

    fn set_page(&mut self, web: usize, page_id: u64, state: PageState) {
        if let Some(page) = self.pages[web].get_mut(page_id.saturating_sub(1) as usize) {
            page.1 = state;
        }
    }

    fn on_broker_event(&mut self, event: BrokerEvent) {
        match event {
            BrokerEvent::IntroductionRequested { .. } => {}
            BrokerEvent::IntroductionMade { requester, target } => {
                self.introductions += 1;
                self.introduced.push((requester.clone(), target.clone()));
                if target.service == "ui" {
                    println!(
                        "[ui] broker: introduced {requester} to {target}, the UI process's own service"
                    );
                } else {
                    println!(
                        "[ui] broker: introduced {requester} to {target}; they now talk directly"
                    );
                }
                if !self.crashed_networks.is_empty() && target.instance == self.network.instance {
                    self.reconnected.insert(requester.instance);
                }
            }
            BrokerEvent::Restarted {
                old,
                new,
                pid,
                restarts_left,
            } => {
                println!(
                    "[ui] RELAUNCH: the broker relaunched {old} as {new} (pid {pid}; {}); \
                     the WebContent processes reconnect to it",
                    report::plural(u64::from(restarts_left), "relaunch left", "relaunches left")
                );
                if old.instance == self.network.instance {
                    let relaunched = Child {
                        instance: new.instance,
                        name: new.to_string(),
                        pid,
                    };
                    self.crashed_networks
                        .push(std::mem::replace(&mut self.network, relaunched));
                    self.services.remove(&old.instance);
                    self.restricted = false;
                    self.relaunches += 1;
                    self.restrict_inbox();
                }
            }
            BrokerEvent::NotRestarted { child, reason } => {
                self.failures
                    .push(format!("{child} crashed and was not relaunched: {reason}"));
                println!("[ui] broker: {child} crashed and was not relaunched: {reason}");
            }
            BrokerEvent::Reported {
                accuser,
                accused,
                reason,
                outcome,
            } => {
                let verdict = match outcome {
                    ReportOutcome::Terminated => {
                        "the report policy (the Network process may accuse a WebContent process) \
                         terminates it: killed with SIGKILL"
                    }
                    ReportOutcome::Ignored => "the report policy ignores it",
                    ReportOutcome::AccusedGone => "it had already left",
                    ReportOutcome::RateLimited => "ignored: too many reports from it",
                };
                println!(
                    "[ui] PUNISH: {accuser} reported {accused} to the broker (\"{reason}\"); {verdict}"
                );
                self.reports.push((accuser, accused, outcome));
            }
            BrokerEvent::IntroductionDenied { requester, service } => {
                self.denials += 1;
                println!("[ui] broker: policy denied {requester} a connection to {service}");
            }
            BrokerEvent::IntroductionFailed {
                requester,
                service,
                failure,
            } => {
                // While a killed Network process is reaped and relaunched,
                // asking for it fails; the WebContent process asks again.
                let relaunching = service == "network"
                    && self.args.crash == Some(Crash::Network)
                    && self.killed_during.is_some()
                    && matches!(
                        failure,
                        ConnectFailure::TargetGone | ConnectFailure::UnknownService
                    );
                if relaunching {
                    println!(
                        "[ui] broker: introducing {requester} to {service} failed: {failure} \
                         (it is being relaunched; {requester} asks again)"
                    );
                } else {
                    self.failures.push(format!(
                        "introducing {requester} to {service} failed: {failure}"
                    ));
                    println!("[ui] broker: introducing {requester} to {service} FAILED: {failure}");
                }
            }
            BrokerEvent::Misbehaved { child, reason } => {
                self.failures.push(format!("{child} misbehaved: {reason}"));
                println!("[ui] broker: {child} misbehaved and was cut off: {reason}");
            }
            BrokerEvent::ChildExited { child, status } => {
                let name = child.to_string();
                let web = self.webs.iter().position(|w| w.instance == child.instance);
                let signal = status.and_then(|s| s.signal());
                if let (Some(web), Some(signal)) = (web, signal) {
                    let loading: Vec<String> = self.pages[web]
                        .iter_mut()
                        .filter(|(_, state)| {
                            matches!(state, PageState::Loading | PageState::Committed)
                        })
                        .map(|(url, state)| {
                            *state = PageState::Crashed;
                            url.clone()
                        })
                        .collect();
                    println!(
                        "[ui] CRASH: {name} died (signal {signal}{}){}; the other processes carry on",
                        if signal == 9 { ", SIGKILL" } else { "" },
                        if loading.is_empty() {
                            String::new()
                        } else {
                            format!(" while loading {}", loading.join(", "))
                        }
                    );
                } else if child.instance == self.network.instance && signal.is_some() {
                    println!(
                        "[ui] CRASH: {name} died ({}) while the WebContent processes load; \
                         the broker relaunches it",
                        describe(status)
                    );
                } else if self
                    .evil
                    .as_ref()
                    .is_some_and(|e| e.instance == child.instance)
                {
                    println!("[ui] {name} (evil) is gone: {}", describe(status));
                } else if !status.is_some_and(|s| s.success()) {
                    println!("[ui] {name} exited: {}", describe(status));
                }
                self.exits.insert(child.instance, status);
            }
        }
    }

    /// Prints the summary and checks the run; `true` if every check passed.
    fn finish(
        mut self,
        network: Result<Summary, String>,
        gpu: Result<Summary, String>,
        elapsed: Duration,
    ) -> bool {
        let mut failures = std::mem::take(&mut self.failures);
        let crashed: Vec<&Child> = self
            .webs
            .iter()
            .filter(
                |w| matches!(self.exits.get(&w.instance), Some(Some(s)) if s.signal().is_some()),
            )
            .collect();

        // WebContent processes.
        for (web, child) in self.webs.iter().enumerate() {
            let victim = self.victim == Some(web) && self.args.crash == Some(Crash::Webcontent);
            let status = self.exits.get(&child.instance).copied().flatten();
            match (&self.web_summaries[web], victim) {
                (Some(Ok(summary)), false) => {
                    failures.extend(
                        summary
                            .failures
                            .iter()
                            .map(|f| format!("{}: {f}", child.name)),
                    );
                    if !status.is_some_and(|s| s.success()) {
                        failures.push(format!("{} exited: {}", child.name, describe(status)));
                    }
                    for (n, (url, state)) in self.pages[web].iter().enumerate() {
                        match state {
                            PageState::Loaded { failures: 0, .. } => {}
                            PageState::Loaded { failures: f, title } => failures.push(format!(
                                "{} page {} ({url}, \"{title}\"): {f} resources did not verify",
                                child.name,
                                n + 1
                            )),
                            other => failures.push(format!(
                                "{} page {} ({url}): {other:?}",
                                child.name,
                                n + 1
                            )),
                        }
                    }
                }
                (Some(Err(e)), false) => failures.push(format!("{}: {e}", child.name)),
                (None, _) => failures.push(format!("{}: never reported", child.name)),
                (Some(Ok(_)), true) => failures.push(format!(
                    "{} was to be killed mid-load but finished first (try more --pages)",
                    child.name
                )),
                (Some(Err(_)), true) => {
                    if status.and_then(|s| s.signal()) != Some(9) {
                        failures.push(format!(
                            "{} was killed with SIGKILL but exited: {}",
                            child.name,
                            describe(status)
                        ));
                    }
                }
            }
        }

        // The services.
        let gallery = site::url("/gallery.html");
        let gallery_loaded = self
            .pages
            .iter()
            .flatten()
            .any(|(url, state)| *url == gallery && matches!(state, PageState::Loaded { .. }));
        let network_crash = self.args.crash == Some(Crash::Network);
        for crashed in &self.crashed_networks {
            let status = self.exits.get(&crashed.instance).copied().flatten();
            if !network_crash {
                failures.push(format!("{} crashed: {}", crashed.name, describe(status)));
            } else if status.and_then(|s| s.signal()) != Some(9) {
                failures.push(format!(
                    "{} was killed with SIGKILL but exited: {}",
                    crashed.name,
                    describe(status)
                ));
            }
        }
        if network_crash {
            if self.killed_during.is_none() {
                failures.push(format!(
                    "{} was to be killed mid-load but the loads finished first (try more --pages)",
                    self.crashed_networks.first().unwrap_or(&self.network).name
                ));
            } else if self.relaunches == 0 {
                failures.push("the Network process was killed but never relaunched".into());
            }
            for web in &self.webs {
                if self.relaunches > 0 && !self.reconnected.contains(&web.instance) {
                    failures.push(format!(
                        "{} never reconnected to the relaunched {}",
                        web.name, self.network.name
                    ));
                }
            }
        }
        for (child, summary) in [(&self.network, &network), (&self.gpu, &gpu)] {
            match summary {
                Ok(summary) => failures.extend(
                    summary
                        .failures
                        .iter()
                        .map(|f| format!("{}: {f}", child.name)),
                ),
                Err(e) => failures.push(e.clone()),
            }
            let status = self.exits.get(&child.instance).copied().flatten();
            if !status.is_some_and(|s| s.success()) {
                failures.push(format!("{} exited: {}", child.name, describe(status)));
            }
        }
        if let Ok(summary) = &network {
            // A relaunched Network process may have come after the image.
            if gallery_loaded && self.crashed_networks.is_empty() && summary.out_of_line_sent == 0 {
                failures.push("the image was loaded but no body went out of line".into());
            }
            if let (Some(victim), Some(Crash::Webcontent)) =
                (self.victim.map(|v| &self.webs[v]), self.args.crash)
            {
                if !summary.peers_closed.contains(&victim.name) {
                    failures.push(format!(
                        "the Network process never saw {} go away",
                        victim.name
                    ));
                }
            }
        }

        // Access control: the inbox is the first tab's only.
        for (web, child) in self.webs.iter().enumerate() {
            let crashed =
                matches!(self.exits.get(&child.instance), Some(Some(s)) if s.signal().is_some());
            match (&self.access[web], web == 0) {
                (Some((200, _)), true) | (Some((403, _)), false) => {}
                (Some((status, detail)), owner) => failures.push(format!(
                    "{} got status {status} for {INBOX} ({detail}), expected {}",
                    child.name,
                    if owner { 200 } else { 403 }
                )),
                (None, _) if crashed => {}
                (None, _) => {
                    failures.push(format!("{} never reported loading {INBOX}", child.name))
                }
            }
        }

        // Punishment: the evil process, and only it, reported and killed.
        let punished = |accused: &Child| {
            self.reports.iter().any(|(accuser, who, outcome)| {
                accuser.service == "network"
                    && who.instance == accused.instance
                    && *outcome == ReportOutcome::Terminated
            })
        };
        if let Some(evil) = &self.evil {
            let status = self.exits.get(&evil.instance).copied().flatten();
            if !punished(evil) {
                failures.push(format!(
                    "{} sent garbage but the Network process's report did not get it killed",
                    evil.name
                ));
            }
            if status.and_then(|s| s.signal()) != Some(9) {
                failures.push(format!(
                    "{} should have been killed with SIGKILL: {}",
                    evil.name,
                    describe(status)
                ));
            }
        }
        for (accuser, accused, outcome) in &self.reports {
            if self
                .evil
                .as_ref()
                .is_none_or(|e| e.instance != accused.instance)
            {
                failures.push(format!(
                    "{accuser} reported {accused}, which is honest ({outcome:?})"
                ));
            }
        }

        // The broker.
        let web_count = self.webs.len();
        if self.denials != web_count {
            failures.push(format!(
                "{} WebContent → WebContent requests denied, expected {web_count}",
                self.denials
            ));
        }
        // Every child to `ui` once (the relaunched Network process too),
        // each WebContent process to the GPU process once and to every
        // Network instance it used (the current one at least), the evil one
        // to the Network process once.
        let made = |requester: &Child, service: &str| {
            self.introduced
                .iter()
                .filter(|(r, t)| r.instance == requester.instance && t.service == service)
                .count()
        };
        let mut expectations: Vec<(&Child, &str, usize)> = self
            .crashed_networks
            .iter()
            .chain([&self.network, &self.gpu])
            .chain(&self.webs)
            .map(|child| (child, "ui", 1))
            .chain(self.webs.iter().map(|web| (web, "gpu", 1)))
            .collect();
        for web in &self.webs {
            let to_network = made(web, "network");
            if to_network == 0 || to_network > 1 + self.relaunches {
                failures.push(format!(
                    "{} was introduced to the Network process {to_network} times",
                    web.name
                ));
            }
        }
        for web in self.webs.iter().chain(&self.evil) {
            expectations.retain(|(child, _, _)| {
                // A killed process may not have got that far.
                child.instance != web.instance
                    || !matches!(self.exits.get(&web.instance), Some(Some(s)) if s.signal().is_some())
            });
        }
        for (child, service, expected) in expectations {
            let got = made(child, service);
            if got != expected {
                failures.push(format!(
                    "{} was introduced to {service} {got} times, expected {expected}",
                    child.name
                ));
            }
        }
        if let Some(evil) = &self.evil {
            if made(evil, "network") != 1 {
                failures.push(format!("{} never reached the Network process", evil.name));
            }
        }

        // The summary.
        let mut total = TransportStats::default();
        for stats in &self.stats {
            report::add(&mut total, stats);
        }
        println!();
        println!(
            "── summary ─────────────────────────────────────────────────────────────────────"
        );
        let width = 14;
        let print = |name: &str, pid: u32, lines: &[String]| {
            let mut lines = lines.iter();
            if let Some(first) = lines.next() {
                println!("{name:<width$} pid {pid:<8} {first}");
            }
            for line in lines {
                println!("{:<width$} {:<12} {line}", "", "");
            }
        };
        print(
            "ui (broker)",
            std::process::id(),
            &[
                format!(
                    "{} children spawned; introductions: {} made, {} denied by policy; {} crashed",
                    2 + web_count + usize::from(self.evil.is_some()) + self.relaunches,
                    self.introductions,
                    self.denials,
                    crashed.len() + self.crashed_networks.len()
                ),
                format!(
                    "network relaunches: {}; reports judged: {} ({} terminated)",
                    self.relaunches,
                    self.reports.len(),
                    self.reports
                        .iter()
                        .filter(|r| r.2 == ReportOutcome::Terminated)
                        .count()
                ),
                format!("to its children: {}", report::traffic(&total)),
                format!(
                    "pages mirrored: {} loaded ({}) in {}",
                    count(self.loaded),
                    bytes(self.loaded_bytes),
                    duration(elapsed.as_nanos() as u64)
                ),
            ],
        );
        let summaries = self
            .crashed_networks
            .iter()
            .map(|child| (child, None))
            .chain([(&self.network, Some(&network)), (&self.gpu, Some(&gpu))])
            .chain(
                self.webs
                    .iter()
                    .zip(&self.web_summaries)
                    .map(|(child, summary)| (child, summary.as_ref())),
            )
            .chain(self.evil.iter().map(|child| (child, None)));
        for (child, summary) in summaries {
            match summary {
                Some(Ok(summary)) => print(&summary.process, summary.pid, &summary.lines),
                other => {
                    let status = self.exits.get(&child.instance).copied().flatten();
                    let evil = self
                        .evil
                        .as_ref()
                        .is_some_and(|e| e.instance == child.instance);
                    let line = match (status.and_then(|s| s.signal()), &self.killed_during, other) {
                        (Some(_), _, _) if evil => format!(
                            "evil: sent garbage, reported by the Network process, {}",
                            describe(status)
                        ),
                        (Some(_), Some(url), _) => {
                            format!("crashed: {} during {url}", describe(status))
                        }
                        (Some(_), None, _) => format!("crashed: {}", describe(status)),
                        (None, _, Some(Err(e))) => {
                            format!("no summary ({e}); {}", describe(status))
                        }
                        (None, _, _) => format!("no summary; {}", describe(status)),
                    };
                    print(&child.name, child.pid, &[line]);
                }
            }
        }
        println!(
            "────────────────────────────────────────────────────────────────────────────────"
        );
        if failures.is_empty() {
            let survivors: Vec<usize> = (0..web_count)
                .filter(|web| {
                    !crashed
                        .iter()
                        .any(|c| c.instance == self.webs[*web].instance)
                })
                .collect();
            let pages = survivors
                .iter()
                .flat_map(|web| &self.pages[*web])
                .filter(|(_, state)| matches!(state, PageState::Loaded { .. }))
                .count() as u64;
            let by = match (survivors.len(), crashed.is_empty()) {
                (1, true) => "1 WebContent process".to_owned(),
                (n, true) => format!("{n} WebContent processes"),
                (1, false) => "the surviving WebContent process".to_owned(),
                (n, false) => format!("the {n} surviving WebContent processes"),
            };
            let mut crash = crashed
                .iter()
                .map(|c| format!("; {} crashed as planned (killed mid-load)", c.name))
                .collect::<String>();
            for old in &self.crashed_networks {
                crash.push_str(&format!(
                    "; {} crashed as planned and was relaunched as {}, {} reconnected",
                    old.name,
                    self.network.name,
                    report::plural(
                        self.reconnected.len() as u64,
                        "WebContent process",
                        "WebContent processes"
                    )
                ));
            }
            if let Some(evil) = &self.evil {
                crash.push_str(&format!(
                    "; {} (evil) reported by the Network process and killed",
                    evil.name
                ));
            }
            if let Some(owner) = self.webs.first() {
                crash.push_str(&format!(
                    "; {INBOX} served to {} only, refused to {}",
                    owner.name,
                    report::plural(web_count as u64 - 1, "other tab", "other tabs")
                ));
            }
            println!(
                "PASS: {} loaded and verified by {by}{crash}; cookies shared; WebContent → WebContent denied; \
                 every GPU frame acknowledged ({})",
                report::plural(pages, "page", "pages"),
                duration(elapsed.as_nanos() as u64)
            );
            true
        } else {
            println!("FAIL: {} checks failed:", failures.len());
            for failure in &failures {
                println!("  - {failure}");
            }
            false
        }
    }
}

/// `exit 0`, `exit 3`, `killed by signal 9 (SIGKILL)`, `not reaped`.
fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "not seen to exit".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (_, Some(9)) => "killed by SIGKILL".into(),
            (_, Some(signal)) => format!("killed by signal {signal}"),
            _ => format!("{s}"),
        },
    }
}
