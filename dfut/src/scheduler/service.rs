//! The networked scheduler service: a thin loop around [`Membership`].
//!
//! Workers register and send heartbeats; clients subscribe and receive the
//! view of live workers whenever it changes and at every tick; tools ask for
//! the cluster status. A worker whose connection closes or whose heartbeats
//! stop is dropped and every client is told at once, so owners fail or
//! retry its tasks instead of waiting forever.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dfut_net::wire::{
    ClusterStatus, Message, ObjectListing, Role, TaskListing, TaskState, WorkerState,
};
use dfut_net::{ClusterCredential, Endpoint, Inbox, Link};
use tokio::sync::mpsc;

use super::membership::Membership;
use crate::Result;

/// How a scheduler runs.
///
/// ```
/// let config = dfut::scheduler::SchedulerConfig::new("127.0.0.1:50051".parse().unwrap());
/// assert_eq!(config.mode, "default");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Placement policy announced to clients.
    pub mode: String,
    /// A worker silent this long is suspect: kept, but not chosen.
    pub suspect_after: Duration,
    /// A worker silent this long is dropped.
    pub heartbeat_timeout: Duration,
    /// How often the view (with loads) is pushed to clients.
    pub tick: Duration,
    /// Where to serve the dashboard and the Prometheus metrics over HTTP
    /// (`None`, the default: nowhere). Keep it on a local or private
    /// address: the pages ask for [`http_token`](Self::http_token) but
    /// travel unencrypted.
    pub http: Option<SocketAddr>,
    /// The token the web server asks for; a random one when `None`.
    pub http_token: Option<String>,
}

impl SchedulerConfig {
    /// Defaults: policy `default`, suspect after 600 ms of silence (three
    /// missed heartbeats), dropped after 2 s, 100 ms ticks, no web server.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            mode: "default".into(),
            suspect_after: Duration::from_millis(600),
            heartbeat_timeout: Duration::from_secs(2),
            tick: Duration::from_millis(100),
            http: None,
            http_token: None,
        }
    }
}

/// A running scheduler. Dropping it does not stop it; call
/// [`SchedulerHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    addr: SocketAddr,
    endpoint: Endpoint,
    web: Option<Arc<super::http::Server>>,
}

impl SchedulerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of its web server (dashboard and metrics), if it runs
    /// one ([`SchedulerConfig::http`]).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(|w| w.addr())
    }

    /// The token its web server asks for, if it runs one: as
    /// `Authorization: Bearer <token>`, or `?token=<token>` in the URL.
    pub fn http_token(&self) -> Option<&str> {
        self.web.as_ref().map(|w| w.token())
    }

    /// The dashboard's address with its token, ready to open in a browser,
    /// if the scheduler runs a web server.
    pub fn dashboard_url(&self) -> Option<String> {
        self.web.as_ref().map(|w| w.url())
    }

    /// Closes every connection and stops accepting (the web server too).
    pub fn shutdown(&self) {
        self.endpoint.close();
        if let Some(web) = &self.web {
            web.shutdown();
        }
    }
}

struct State {
    membership: Membership,
    subscribers: Vec<Link>,
    mode: String,
    tick_ms: u32,
    /// Tools' questions about owners' backlogs waiting for the owners'
    /// answers, by the number they were asked under; at most
    /// [`MAX_BACKLOG_QUERIES`].
    backlog_queries: HashMap<u64, mpsc::Sender<Vec<TaskListing>>>,
    next_query: u64,
    /// Tasks ended cluster-wide, sampled every second: the last
    /// [`HISTORY_KEPT`] samples.
    history: VecDeque<Sample>,
}

/// One sample of the tasks ended on the live workers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Tasks finished with a value, added over the live workers.
    pub finished: u64,
    /// Tasks failed, added over the live workers.
    pub failed: u64,
}

/// Samples of throughput kept: five minutes, one a second.
const HISTORY_KEPT: usize = 300;

/// What the scheduler's web pages read: its state and its endpoint (to ask
/// workers).
#[derive(Clone)]
pub(crate) struct Cluster {
    state: Shared,
    pub endpoint: Endpoint,
}

impl Cluster {
    /// The placement policy and the live workers.
    pub fn view(&self) -> (String, Vec<WorkerState>) {
        let st = lock(&self.state);
        (st.mode.clone(), st.membership.view(Instant::now()))
    }

    /// The throughput samples, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        lock(&self.state).history.iter().copied().collect()
    }
}

impl State {
    fn sample(&mut self) {
        let workers = self.membership.view(Instant::now());
        // Counts peers report: added without overflowing.
        let add =
            |f: fn(&WorkerState) -> u64| workers.iter().fold(0u64, |n, w| n.saturating_add(f(w)));
        let sample = Sample {
            unix_ms: crate::clock::unix_us(Instant::now()) / 1000,
            finished: add(|w| w.load.tasks_done),
            failed: add(|w| w.load.tasks_failed),
        };
        if self.history.len() >= HISTORY_KEPT {
            self.history.pop_front();
        }
        self.history.push_back(sample);
    }
}

impl State {
    fn view(&self) -> Message {
        Message::View {
            mode: self.mode.clone(),
            workers: self.membership.view(Instant::now()),
            tick_ms: self.tick_ms,
        }
    }

    fn broadcast(&mut self, msg: &Message) {
        self.subscribers.retain(|l| l.send(msg.clone()).is_ok());
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a scheduler on the current tokio runtime.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use dfut::scheduler::{serve, SchedulerConfig};
///
/// let credential = dfut::ClusterCredential::generate()?;
/// let scheduler = serve(SchedulerConfig::new("127.0.0.1:0".parse().unwrap()), &credential)?;
/// assert_ne!(scheduler.addr().port(), 0);
/// scheduler.shutdown();
/// # Ok::<(), dfut::Error>(()) }).unwrap();
/// ```
pub fn serve(config: SchedulerConfig, credential: &ClusterCredential) -> Result<SchedulerHandle> {
    let endpoint = Endpoint::bind(config.addr, credential, crate::limits::endpoint_options())?;
    let addr = endpoint.local_addr()?;
    let state: Shared = Arc::new(Mutex::new(State {
        membership: Membership::new(config.suspect_after, config.heartbeat_timeout),
        subscribers: Vec::new(),
        mode: config.mode.clone(),
        tick_ms: u32::try_from(config.tick.as_millis()).unwrap_or(u32::MAX),
        backlog_queries: HashMap::new(),
        next_query: 0,
        history: VecDeque::new(),
    }));
    let ticker = state.clone();
    let tick = config.tick;
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        let mut sampled = Instant::now();
        loop {
            interval.tick().await;
            let mut st = lock(&ticker);
            if sampled.elapsed() >= Duration::from_secs(1) {
                sampled = Instant::now();
                st.sample();
            }
            for id in st.membership.expire(Instant::now()) {
                tracing::warn!(
                    worker = format_args!("{id:x}"),
                    "worker missed its heartbeats"
                );
                st.broadcast(&Message::WorkerLost { id });
            }
            let view = st.view();
            st.broadcast(&view);
            if Arc::strong_count(&ticker) == 1 {
                return;
            }
        }
    });
    let web = match config.http {
        Some(http) => {
            let cluster = Cluster {
                state: state.clone(),
                endpoint: endpoint.clone(),
            };
            let token = config
                .http_token
                .clone()
                .unwrap_or_else(super::http::new_token);
            let web = super::http::serve(http, token, cluster)?;
            tracing::info!(url = web.url(), "dashboard and metrics");
            Some(Arc::new(web))
        }
        None => None,
    };
    let acceptor = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            let (state, endpoint) = (state.clone(), acceptor.clone());
            tokio::spawn(async move {
                let peer = incoming.remote_addr();
                match incoming.establish().await {
                    Ok((link, inbox)) => serve_link(state, endpoint, link, inbox).await,
                    Err(e) => dfut_net::refusals::refused(peer, &e),
                }
            });
        }
    });
    tracing::info!(listen = %addr, mode = config.mode, "scheduler started");
    Ok(SchedulerHandle {
        addr,
        endpoint,
        web,
    })
}

/// How long a registering worker's address has to answer: less than the
/// 2 s a worker waits for its heartbeats to be acknowledged (they are not
/// read meanwhile).
const REACH_PATIENCE: Duration = Duration::from_millis(1500);

/// Whether a cluster member answers at `addr` (a registering worker's
/// address): a member cannot register workers where none listens.
async fn answers(endpoint: &Endpoint, addr: &str) -> std::result::Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    match tokio::time::timeout(REACH_PATIENCE, endpoint.connect(addr)).await {
        Ok(Ok((link, _inbox))) => {
            // Said as a tool, and goodbye: the worker ends it quietly.
            let _ = link.send(Message::Hello {
                node: rand::random(),
                role: Role::Tool,
                secret: rand::random(),
            });
            let _ = link.send(Message::Goodbye);
            let _ = tokio::time::timeout(Duration::from_millis(500), link.closed()).await;
            link.close("reachable");
            Ok(())
        }
        Ok(Err(e)) => Err(format!("{addr} does not answer: {e}")),
        Err(_) => Err(format!("{addr} does not answer within {REACH_PATIENCE:?}")),
    }
}

async fn serve_link(state: Shared, endpoint: Endpoint, link: Link, mut inbox: Inbox) {
    static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let session = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut worker: Option<u64> = None;
    let mut role = None;
    while let Some(msg) = inbox.recv().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                crate::log_connection_end(link.peer(), &e);
                break;
            }
        };
        match (role, msg) {
            (None, Message::Hello { role: r, .. }) => role = Some(r),
            (Some(Role::Worker), Message::Register(info)) => {
                if let Err(why) = Membership::check(&info) {
                    tracing::warn!(peer = %link.peer(), id = format_args!("{:x}", info.id), "refused a registration: {why}");
                    link.close("a worker description out of bounds");
                    break;
                }
                if let Err(why) = answers(&endpoint, &info.addr).await {
                    tracing::warn!(peer = %link.peer(), id = format_args!("{:x}", info.id), "refused a registration: {why}");
                    link.close("its address does not answer");
                    break;
                }
                let (id, addr, host, gpu) =
                    (info.id, info.addr.clone(), info.host.clone(), info.gpu);
                let mut st = lock(&state);
                if !st.membership.register(info, Instant::now(), session) {
                    drop(st);
                    tracing::warn!(peer = %link.peer(), id = format_args!("{id:x}"), addr, "refused a registration: a live worker holds that id or address");
                    link.close("a live worker holds that id or address");
                    break;
                }
                worker = Some(id);
                tracing::info!(addr, host, gpu, "worker registered");
                let view = st.view();
                st.broadcast(&view);
            }
            (Some(Role::Worker), Message::Heartbeat(load)) => {
                let known = worker.is_some_and(|id| {
                    lock(&state)
                        .membership
                        .heartbeat(id, session, load, Instant::now())
                });
                let _ = link.send(if known {
                    Message::HeartbeatAck
                } else {
                    // Dropped while alive (paused, cut off) or never known
                    // here (this scheduler restarted).
                    Message::RegisterAgain
                });
            }
            (Some(Role::Client), Message::Subscribe) => {
                let mut st = lock(&state);
                let view = st.view();
                if link.send(view).is_ok() {
                    st.subscribers.push(link.clone());
                }
            }
            (
                Some(Role::Tool),
                Message::TasksRequest {
                    req,
                    limit,
                    state: wanted,
                },
            ) => {
                let tasks = if crate::inspect::lists_backlogs(wanted) {
                    backlogs(&state, limit).await
                } else {
                    Vec::new()
                };
                let fetches = Vec::new();
                let _ = link.send(Message::TasksReply {
                    req,
                    tasks,
                    fetches,
                });
            }
            (Some(Role::Client), Message::TasksReply { req, tasks, .. }) => {
                if let Some(answer) = lock(&state).backlog_queries.get(&req) {
                    let _ = answer.try_send(tasks);
                }
            }
            (Some(_), Message::StatusRequest) => {
                let st = lock(&state);
                let _ = link.send(Message::StatusReply(ClusterStatus::new(
                    st.mode.clone(),
                    st.membership.view(Instant::now()),
                )));
            }
            (_, Message::Goodbye) => break,
            (r, other) => {
                tracing::warn!(peer = %link.peer(), role = ?r, "unexpected message: {other:?}");
            }
        }
    }
    if let Some(id) = worker {
        let mut st = lock(&state);
        if st.membership.remove(id, session) {
            tracing::warn!(worker = format_args!("{id:x}"), "worker disconnected");
            st.broadcast(&Message::WorkerLost { id });
            let view = st.view();
            st.broadcast(&view);
        }
    }
}

/// Tools' backlog questions waiting at once.
const MAX_BACKLOG_QUERIES: usize = 16;
/// How long the scheduler waits for owners to list their backlogs.
const BACKLOG_PATIENCE: Duration = Duration::from_secs(2);

/// Up to `limit` tasks (at most [`MAX_LISTED_TASKS`]) waiting in the
/// backlogs of the owners following this scheduler, asked of each; an
/// owner that does not answer within [`BACKLOG_PATIENCE`] is left out.
async fn backlogs(state: &Shared, limit: u32) -> Vec<TaskListing> {
    let limit = limit.min(MAX_LISTED_TASKS);
    let (query, mut answers, asked) = {
        let mut st = lock(state);
        if st.backlog_queries.len() >= MAX_BACKLOG_QUERIES {
            return Vec::new();
        }
        st.next_query += 1;
        let query = st.next_query;
        let (tx, rx) = mpsc::channel(st.subscribers.len().max(1));
        st.backlog_queries.insert(query, tx);
        let request = Message::TasksRequest {
            req: query,
            limit,
            state: Some(TaskState::Backlog),
        };
        let asked = st
            .subscribers
            .iter()
            .filter(|l| l.send(request.clone()).is_ok())
            .count();
        (query, rx, asked)
    };
    let mut tasks = Vec::new();
    let _ = tokio::time::timeout(BACKLOG_PATIENCE, async {
        for _ in 0..asked {
            match answers.recv().await {
                Some(listed) => {
                    let room = (limit as usize).saturating_sub(tasks.len());
                    tasks.extend(listed.into_iter().take(room));
                }
                None => break,
            }
        }
    })
    .await;
    lock(state).backlog_queries.remove(&query);
    tasks
}

/// Tasks one worker or owner lists at most, and one report of
/// [`query_tasks`] keeps.
pub const MAX_LISTED_TASKS: u32 = 20_000;

/// Asks the scheduler at `addr` for the cluster status.
///
/// ```
/// let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// let query = dfut::scheduler::query_status(rt.scheduler_addr(), rt.credential());
/// let status = rt.block_on(query)?;
/// assert_eq!(status.workers.len(), 2);
/// assert_eq!(status.mode, "default");
/// # Ok::<(), dfut::Error>(())
/// ```
pub async fn query_status(
    addr: SocketAddr,
    credential: &ClusterCredential,
) -> Result<ClusterStatus> {
    let endpoint = tool_endpoint(credential)?;
    let status = ask_status(&endpoint, addr).await;
    endpoint.close();
    status
}

/// Lists the `limit` largest objects in the cluster whose scheduler is at
/// `addr`, largest first: each worker named by the scheduler lists its
/// own (at most 1,000), with the references its owner holds to it. A
/// worker that does not answer within 10 s is left out.
///
/// ```
/// #[dfut::remote]
/// fn zeros(n: u64) -> Vec<u8> {
///     vec![0; n as usize]
/// }
///
/// let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// let _ctx = rt.enter();
/// let big = zeros(200_000);
/// big.get()?;
/// let query = dfut::scheduler::query_objects(rt.scheduler_addr(), rt.credential(), 10);
/// let objects = rt.block_on(query)?;
/// assert_eq!(objects[0].id, big.id());
/// assert!(objects[0].bytes >= 200_000);
/// assert_eq!(objects[0].refs, Some(1), "the handle `big`");
/// # Ok::<(), dfut::Error>(())
/// ```
pub async fn query_objects(
    addr: SocketAddr,
    credential: &ClusterCredential,
    limit: u32,
) -> Result<Vec<ObjectListing>> {
    let endpoint = tool_endpoint(credential)?;
    let listed = objects_via(&endpoint, addr, limit).await;
    endpoint.close();
    listed
}

/// [`query_objects`] on `endpoint`.
pub(crate) async fn objects_via(
    endpoint: &Endpoint,
    addr: SocketAddr,
    limit: u32,
) -> Result<Vec<ObjectListing>> {
    let status = ask_status(endpoint, addr).await?;
    Ok(objects_of(endpoint, &status.workers, limit, TOOL_PATIENCE).await)
}

/// The `limit` largest objects `workers` hold, largest first (a worker
/// that does not answer within `patience` is left out).
pub(crate) async fn objects_of(
    endpoint: &Endpoint,
    workers: &[WorkerState],
    limit: u32,
    patience: Duration,
) -> Vec<ObjectListing> {
    let request = Message::ObjectsRequest { req: 1, limit };
    let pick = |m| match m {
        Message::ObjectsReply { objects, .. } => Some(objects),
        _ => None,
    };
    let what = ("object listing", patience);
    let mut all: Vec<ObjectListing> = ask_each(endpoint, workers, request, pick, what)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|o| std::cmp::Reverse(o.bytes));
    all.truncate(limit as usize);
    all
}

/// Asks each of `workers` the same `request`; the answers of those that
/// gave one within `patience` (`what` names it in the warning about the
/// others).
pub(crate) async fn ask_each<T>(
    endpoint: &Endpoint,
    workers: &[WorkerState],
    request: Message,
    pick: impl Fn(Message) -> Option<T> + Copy,
    (what, patience): (&str, Duration),
) -> Vec<T> {
    let asks = workers.iter().map(|w| {
        let request = request.clone();
        async move {
            let worker: SocketAddr = w.info.addr.parse().ok()?;
            let asked = tokio::time::timeout(patience, ask(endpoint, worker, request, pick));
            let answer = asked.await.unwrap_or(Err(crate::Error::Timeout(patience)));
            answer
                .inspect_err(|e| tracing::warn!(%worker, "no {what}: {e}"))
                .ok()
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Lists the tasks of the cluster whose scheduler is at `addr` that pass
/// `filter`: those waiting in owners' backlogs (asked of each owner
/// through the scheduler), and each worker's queued, running and most
/// recent ended tasks (up to `limit` from each, at most
/// [`MAX_LISTED_TASKS`]), with the objects workers served to readers. The
/// filter's state is applied where the tasks are, so a rare state is
/// found however many tasks are listed. A worker or owner that does not
/// answer within 10 s is left out. Workers keep their last 10,000 ended
/// tasks, so this works after the driver that submitted them has exited.
///
/// ```
/// use dfut::inspect::{TaskFilter, TaskState};
///
/// #[dfut::remote]
/// fn double(x: u64) -> u64 {
///     2 * x
/// }
///
/// let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// let _ctx = rt.enter();
/// let four = double(2);
/// four.get()?;
/// let finished = TaskFilter::new().state(TaskState::Finished);
/// let query = dfut::scheduler::query_tasks(rt.scheduler_addr(), rt.credential(), &finished, 100);
/// let report = rt.block_on(query)?;
/// let task = report.tasks.iter().find(|t| t.id == four.id()).expect("listed");
/// assert!(task.function.ends_with("double"));
/// # Ok::<(), dfut::Error>(())
/// ```
pub async fn query_tasks(
    addr: SocketAddr,
    credential: &ClusterCredential,
    filter: &crate::inspect::TaskFilter,
    limit: u32,
) -> Result<crate::inspect::TaskReport> {
    let endpoint = tool_endpoint(credential)?;
    let report = tasks_via(&endpoint, addr, filter, limit).await;
    endpoint.close();
    report
}

/// [`query_tasks`] on `endpoint`.
pub(crate) async fn tasks_via(
    endpoint: &Endpoint,
    addr: SocketAddr,
    filter: &crate::inspect::TaskFilter,
    limit: u32,
) -> Result<crate::inspect::TaskReport> {
    let limit = limit.min(MAX_LISTED_TASKS);
    let state = filter.state;
    // The other conditions are checked here: ask for all each source
    // lists, so they do not run on a list cut to `limit`.
    let narrowed = filter.function.is_some() || filter.worker.is_some() || filter.owner.is_some();
    let asked = if narrowed { MAX_LISTED_TASKS } else { limit };
    let status = ask_status(endpoint, addr).await?;
    let request = Message::TasksRequest {
        req: 1,
        limit: asked,
        state,
    };
    let pick = |m| match m {
        Message::TasksReply { tasks, fetches, .. } => Some((tasks, fetches)),
        _ => None,
    };
    let backlogs = ask(endpoint, addr, request.clone(), pick);
    let what = ("task listing", TOOL_PATIENCE);
    let listed = ask_each(endpoint, &status.workers, request, pick, what);
    let (backlogs, listed) = tokio::join!(backlogs, listed);
    let mut report = crate::inspect::TaskReport::default();
    match backlogs {
        Ok((tasks, _)) => report.tasks.extend(tasks),
        Err(e) => tracing::warn!(scheduler = %addr, "no backlog listing: {e}"),
    }
    for (tasks, fetches) in listed {
        report.tasks.extend(tasks);
        report.fetches.extend(fetches);
    }
    report.tasks.retain(|t| filter.matches(t));
    report.tasks.truncate(limit as usize);
    report.workers = status.workers.iter().map(|w| w.info.addr.clone()).collect();
    report.sort();
    Ok(report)
}

/// An endpoint for a tool's questions.
fn tool_endpoint(credential: &ClusterCredential) -> Result<Endpoint> {
    Ok(Endpoint::bind(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        credential,
        crate::limits::endpoint_options(),
    )?)
}

async fn ask_status(endpoint: &Endpoint, addr: SocketAddr) -> Result<ClusterStatus> {
    ask(endpoint, addr, Message::StatusRequest, |m| match m {
        Message::StatusReply(status) => Some(status),
        _ => None,
    })
    .await
}

/// How long a tool waits for each worker's answer.
const TOOL_PATIENCE: Duration = Duration::from_secs(10);

/// Connects to `addr` as a tool, sends `request`, and returns the first
/// reply `pick` takes, within 10 s.
async fn ask<T>(
    endpoint: &Endpoint,
    addr: SocketAddr,
    request: Message,
    pick: impl Fn(Message) -> Option<T>,
) -> Result<T> {
    tokio::time::timeout(TOOL_PATIENCE, async {
        let (link, mut inbox) = endpoint.connect(addr).await?;
        link.send(Message::Hello {
            node: rand::random(),
            role: Role::Tool,
            secret: rand::random(),
        })?;
        link.send(request)?;
        while let Some(msg) = inbox.recv().await {
            if let Some(reply) = pick(msg?) {
                link.close("done");
                return Ok(reply);
            }
        }
        Err(crate::Error::Transport(format!(
            "{addr} closed the connection"
        )))
    })
    .await
    .map_err(|_| crate::Error::Timeout(TOOL_PATIENCE))?
}
