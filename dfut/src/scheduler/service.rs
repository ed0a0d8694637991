//! The networked scheduler service: a thin loop around [`Membership`].
//!
//! Workers register and send heartbeats; clients subscribe and receive the
//! view of live workers whenever it changes and at every tick; tools ask for
//! the cluster status. A worker whose connection closes or whose heartbeats
//! stop is dropped and every client is told at once, so owners fail or
//! retry its tasks instead of waiting forever.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dfut_net::wire::{ClusterStatus, Message, ObjectListing, Role};
use dfut_net::{ClusterCredential, Endpoint, Inbox, Link};

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
}

impl SchedulerConfig {
    /// Defaults: policy `default`, suspect after 600 ms of silence (three
    /// missed heartbeats), dropped after 2 s, 100 ms ticks.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            mode: "default".into(),
            suspect_after: Duration::from_millis(600),
            heartbeat_timeout: Duration::from_secs(2),
            tick: Duration::from_millis(100),
        }
    }
}

/// A running scheduler. Dropping it does not stop it; call
/// [`SchedulerHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    addr: SocketAddr,
    endpoint: Endpoint,
}

impl SchedulerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and stops accepting.
    pub fn shutdown(&self) {
        self.endpoint.close();
    }
}

struct State {
    membership: Membership,
    subscribers: Vec<Link>,
    mode: String,
    tick_ms: u32,
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
    }));
    let ticker = state.clone();
    let tick = config.tick;
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let mut st = lock(&ticker);
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
    Ok(SchedulerHandle { addr, endpoint })
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
                    tracing::warn!(peer = %link.peer(), id = format_args!("{id:x}"), "refused a registration: a live worker holds that id");
                    link.close("a live worker holds that id");
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
    let listed = async {
        let status = ask_status(&endpoint, addr).await?;
        let asks = status.workers.iter().map(|w| {
            let endpoint = &endpoint;
            async move {
                let worker: SocketAddr = w.info.addr.parse().ok()?;
                let request = Message::ObjectsRequest { req: 1, limit };
                let reply = ask(endpoint, worker, request, |m| match m {
                    Message::ObjectsReply { objects, .. } => Some(objects),
                    _ => None,
                })
                .await;
                reply
                    .inspect_err(|e| tracing::warn!(%worker, "no object listing: {e}"))
                    .ok()
            }
        });
        let mut all: Vec<ObjectListing> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        all.sort_by_key(|o| std::cmp::Reverse(o.bytes));
        all.truncate(limit as usize);
        Ok(all)
    }
    .await;
    endpoint.close();
    listed
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

/// Connects to `addr` as a tool, sends `request`, and returns the first
/// reply `pick` takes, within 10 s.
async fn ask<T>(
    endpoint: &Endpoint,
    addr: SocketAddr,
    request: Message,
    pick: impl Fn(Message) -> Option<T>,
) -> Result<T> {
    const PATIENCE: Duration = Duration::from_secs(10);
    tokio::time::timeout(PATIENCE, async {
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
    .map_err(|_| crate::Error::Timeout(PATIENCE))?
}
