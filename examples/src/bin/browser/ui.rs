//! The UI process: the broker. It spawns the children, decides who may talk
//! to whom, drives each WebContent process's navigations, mirrors its
//! pages, kills one with `--crash`, and at the end collects every process's
//! summary and checks the whole run.
//!
//! Threads: the broker runs on its own ([`Broker::run`]), each WebContent
//! connection has a proxy thread (WebKit's `WebPageProxy`), and the main
//! thread receives what they report over one channel, so it never blocks on
//! a child.

use crate::protocol::*;
use crate::report::{self, bytes, count, duration};
use crate::site::{self, site};
use crate::{Args, Role};
use ferry_handoff::{Broker, BrokerEvent, Channel, Decision, InstanceId, PeerId};
use ferry_transport::Context;
use ferry_transport::{Connection, DispatchError, Remote, TransportStats};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

const AUX: Remote<AuxiliaryProcess> = Remote::new(0);
const WEB_PAGE: Remote<WebPage> = Remote::new(0);
/// How long a message to a child waits for room.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child has to answer `Shutdown` with its summary.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The broker's policy: WebContent processes may reach the Network and GPU
/// processes, and nothing else may be introduced to anything.
fn policy(requester: &PeerId, service: &str) -> Decision {
    match (requester.service.as_str(), service) {
        ("webcontent", "network" | "gpu") => Decision::Allow,
        _ => Decision::Deny,
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
    if args.crash && args.web < 2 {
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

    let mut broker = Broker::new(policy).map_err(|e| format!("cannot create the broker: {e}"))?;
    let (network, network_connection) = spawn_child(&mut broker, &exe, Role::Network, 0, args)?;
    let (gpu, gpu_connection) = spawn_child(&mut broker, &exe, Role::Gpu, 0, args)?;
    let mut webs = Vec::new();
    let mut web_connections = Vec::new();
    for index in 0..args.web {
        let (child, connection) = spawn_child(&mut broker, &exe, Role::Webcontent, index, args)?;
        webs.push(child);
        web_connections.push(connection);
    }
    println!(
        "[ui] spawned {} with the handoff bootstrap socket",
        [&network, &gpu]
            .into_iter()
            .chain(&webs)
            .map(|c| format!("{} (pid {})", c.name, c.pid))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let (events, inbox) = mpsc::channel();
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
    for (web, connection) in web_connections.into_iter().enumerate() {
        let navigations = navigations(web, args.pages);
        let events = events.clone();
        std::thread::Builder::new()
            .name(format!("proxy {}", webs[web].name))
            .spawn(move || web_proxy(web, connection, navigations, events, deadline))
            .map_err(|e| format!("cannot start a page proxy thread: {e}"))?;
    }
    drop(events);

    let mut ui = Ui::new(args, network, gpu, webs, handle.clone());
    ui.watch_webs(&inbox, deadline);

    // Every WebContent process is done: collect the services' summaries.
    let network_summary = shut_down(network_connection, &ui.network.name);
    let gpu_summary = shut_down(gpu_connection, &ui.gpu.name);
    ui.stats.push(network_summary.1);
    ui.stats.push(gpu_summary.1);
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

/// Spawns a child through the broker and hands it its connection to us
/// (see `child.rs` for why it travels on standard input).
fn spawn_child(
    broker: &mut Broker,
    exe: &Path,
    role: Role,
    index: u32,
    args: &Args,
) -> Result<(Child, Connection), String> {
    let (handover, theirs) =
        Channel::pair().map_err(|e| format!("cannot create a socketpair: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(["--role", role.service()])
        .args(["--index", &index.to_string()])
        .args(["--web", &args.web.to_string()])
        .args(["--pages", &args.pages.to_string()])
        .args(["--cookie-reads", &args.cookie_reads.to_string()])
        .args(["--frame-commands", &args.frame_commands.to_string()])
        .args(["--fps", &args.fps.to_string()])
        .args(["--wait", &args.wait.to_string()])
        .args(["--timeout", &args.timeout.to_string()])
        .stdin(Stdio::from(OwnedFd::from(theirs)));
    // `spawn` consumes the command, and with it our copy of the child's end.
    let instance = broker
        .spawn(role.service(), command)
        .map_err(|e| format!("cannot spawn the {} process: {e}", role.service()))?;
    let name = broker
        .peer(instance)
        .map(ToString::to_string)
        .unwrap_or_default();
    let pid = broker.pid(instance).unwrap_or(0);
    let schema = if role == Role::Webcontent {
        UI_WEB_SCHEMA
    } else {
        UI_AUX_SCHEMA
    };
    let (connection, endpoint) = Connection::create(ui_side(args.wait, schema, &name))
        .map_err(|e| format!("cannot create a connection: {e}"))?;
    let fds: Vec<BorrowedFd<'_>> = endpoint.fds.iter().map(AsFd::as_fd).collect();
    handover
        .send_timeout(&endpoint.metadata, &fds, SEND_TIMEOUT)
        .map_err(|e| format!("cannot hand {name} its connection: {e}"))?;
    // `endpoint` and `handover` drop here: the child holds the only copies.
    Ok((
        Child {
            instance,
            name,
            pid,
        },
        connection,
    ))
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
    network: Child,
    gpu: Child,
    webs: Vec<Child>,
    handle: ferry_handoff::BrokerHandle,
    /// Which WebContent process `--crash` kills, at the commit of which of
    /// its navigations, and the page it was loading.
    victim: Option<usize>,
    kill_at: u64,
    killed_during: Option<String>,
    pages: Vec<Vec<(String, PageState)>>,
    web_summaries: Vec<Option<Result<Summary, String>>>,
    exits: BTreeMap<InstanceId, Option<ExitStatus>>,
    introductions: usize,
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
        handle: ferry_handoff::BrokerHandle,
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
            gpu,
            victim: args.crash.then(|| webs.len() - 1),
            killed_during: None,
            web_summaries: vec![None; webs.len()],
            webs,
            handle,
            pages,
            exits: BTreeMap::new(),
            introductions: 0,
            denials: 0,
            stats: Vec::new(),
            failures: Vec::new(),
            loaded: 0,
            loaded_bytes: 0,
        }
    }

    /// Handles events until every WebContent process has reported and
    /// exited, or the deadline passes.
    fn watch_webs(&mut self, inbox: &Receiver<Event>, deadline: Instant) {
        loop {
            let reported = self.web_summaries.iter().all(Option::is_some);
            let exited = self
                .webs
                .iter()
                .all(|w| self.exits.contains_key(&w.instance));
            if reported && exited {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let waiting: Vec<&str> = self
                    .webs
                    .iter()
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

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Broker(event) => self.on_broker_event(event),
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
                    println!(
                        "[ui] --crash: killing {} (pid {}) with SIGKILL while its subresources of {url} load",
                        self.webs[web].name, self.webs[web].pid
                    );
                    self.handle.kill(self.webs[web].instance);
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
                println!("[ui] broker: introduced {requester} to {target}; they now talk directly");
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
                self.failures.push(format!(
                    "introducing {requester} to {service} failed: {failure}"
                ));
                println!("[ui] broker: introducing {requester} to {service} FAILED: {failure}");
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
            let victim = self.victim == Some(web);
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
            if gallery_loaded && summary.out_of_line_sent == 0 {
                failures.push("the image was loaded but no body went out of line".into());
            }
            if let Some(victim) = self.victim.map(|v| &self.webs[v]) {
                if !summary.peers_closed.contains(&victim.name) {
                    failures.push(format!(
                        "the Network process never saw {} go away",
                        victim.name
                    ));
                }
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
        if self.introductions != 2 * web_count {
            failures.push(format!(
                "{} introductions made, expected {}",
                self.introductions,
                2 * web_count
            ));
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
                    2 + web_count,
                    self.introductions,
                    self.denials,
                    crashed.len()
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
        let summaries = [(&self.network, Some(&network)), (&self.gpu, Some(&gpu))]
            .into_iter()
            .chain(
                self.webs
                    .iter()
                    .zip(&self.web_summaries)
                    .map(|(child, summary)| (child, summary.as_ref())),
            );
        for (child, summary) in summaries {
            match summary {
                Some(Ok(summary)) => print(&summary.process, summary.pid, &summary.lines),
                other => {
                    let status = self.exits.get(&child.instance).copied().flatten();
                    let line = match (status.and_then(|s| s.signal()), &self.killed_during, other) {
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
            let crash = crashed
                .iter()
                .map(|c| format!("; {} crashed as planned (killed mid-load)", c.name))
                .collect::<String>();
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
