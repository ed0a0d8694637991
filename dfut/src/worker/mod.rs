//! The worker: runs tasks, keeps their results, serves them to whoever
//! holds a reference.
//!
//! A worker registers with the scheduler and sends heartbeats with its load.
//! Owners connect to it directly and send tasks; it resolves each task's
//! arguments (inline, from its own store, or fetched from the worker that
//! holds them), runs the function on a bounded number of slots, stores the
//! result and reports completion to the owner, with the value inline when it
//! is small. It never decides placement.

mod config;
mod deadline;
mod exec;
mod ledger;
mod listing;
mod monitor;
mod output;
mod owners;
mod pushed;
mod runner;
mod store;
mod tasklog;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dfut_net::wire::{Message, Role, TaskSpec, WorkerInfo, WorkerLoad};
use dfut_net::{ClusterCredential, Endpoint, Inbox, Link};

pub use config::{WorkerConfig, host_id};
pub use exec::cancelled;
pub(crate) use exec::{in_task, wait_in_task};
pub(crate) use output::init_tracing as init_worker_tracing;

/// Whether this process's output is captured (it is a worker process):
/// it must not print other workers' lines, which it would capture and
/// send on again.
pub(crate) fn output_captured() -> bool {
    output::installed().is_some()
}
pub use output::log_dir;
use runner::Runner;
use store::Store;

use crate::client::Client;
use crate::{Error, Result, lock};

/// How long a reader waits for an object whose task has not reached this
/// worker before it is told the object is not here.
const AWAIT_PATIENCE: Duration = Duration::from_secs(30);

/// Runs a worker until the process is killed. Never returns `Ok`.
///
/// Call it from your own binary, so the worker has your remote functions:
///
/// ```no_run
/// fn main() -> dfut::Result<()> {
///     // Settings from DFUT_SCHEDULER and the rest; with the `cli` feature,
///     // `<WorkerConfig as clap::Parser>::parse()` takes flags too.
///     dfut::worker::run(dfut::worker::WorkerConfig::from_env()?)
/// }
/// ```
pub fn run(config: WorkerConfig) -> Result<()> {
    output::init_tracing();
    let credential = load_credential(&config)?;
    run_with(config, credential, true)
}

/// [`run`] with the credential in hand. What the process prints from now
/// on is captured (see [`log_dir`]), and with `echo` also copied to the
/// terminal it had.
pub(crate) fn run_with(
    config: WorkerConfig,
    credential: ClusterCredential,
    echo: bool,
) -> Result<()> {
    let capture = config.capture_output;
    let runtime = runtime_for(&config)?;
    let worker = runtime.block_on(start(config, credential))?;
    // Captured once started: an error starting goes to the terminal.
    if capture && let Err(e) = output::capture(echo) {
        tracing::warn!("this worker's output is not captured (it stays on its terminal): {e}");
    }
    if let Some(out) = output::installed() {
        runtime.spawn(forward_output(Arc::downgrade(&worker.shared), out));
    }
    crate::context::set_default(Some(worker.client.clone()));
    runtime.block_on(std::future::pending::<()>());
    Ok(())
}

/// The credential from `--credential-file` or `DFUT_CREDENTIAL`.
fn load_credential(config: &WorkerConfig) -> Result<ClusterCredential> {
    if let Some(path) = &config.credential_file {
        return Ok(ClusterCredential::from_file(path)?);
    }
    match std::env::var("DFUT_CREDENTIAL") {
        Ok(pem) => Ok(ClusterCredential::from_pem(&pem)?),
        Err(_) => Err(Error::Auth(
            "a worker needs the cluster credential: pass --credential-file \
             or set DFUT_CREDENTIAL"
                .into(),
        )),
    }
}

/// A multi-thread runtime whose threads see `client` as the current client
/// once one is set.
pub(crate) fn runtime_for(config: &WorkerConfig) -> Result<tokio::runtime::Runtime> {
    // At least two: tasks run inline on all but one (see
    // `exec::InlinePermit`), so one is always free for messages. A third
    // thread for two slots cost W3 about 7 % on two cores.
    let threads =
        crate::runtime::runtime_threads("DFUT_WORKER_THREADS", config.slots().clamp(2, 4) as usize);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("dfut-worker")
        .thread_stack_size(runner::STACK_BYTES)
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the worker runtime"))
}

/// A running worker.
pub(crate) struct Worker {
    pub client: Client,
    shared: Arc<Shared>,
}

impl Worker {
    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.client.endpoint().close();
    }
}

/// How often a worker removes the shared memory and spill files of dead
/// processes of its host.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// State shared by the tasks of one worker.
pub(crate) struct Shared {
    pub addr: SocketAddr,
    pub client: Client,
    pub store: Mutex<Store>,
    pub runner: Arc<Runner>,
    /// The runner's slots: this worker's CPUs.
    pub slots: u32,
    /// Its GPUs, reserved memory and custom resources.
    pub ledger: Arc<ledger::Ledger>,
    /// Async tasks running now, to cancel them; bounded by the tasks sent
    /// here.
    pub aborts:
        Mutex<std::collections::HashMap<dfut_net::wire::ObjectId, tokio::task::AbortHandle>>,
    pub running: AtomicU32,
    pub queued: AtomicU32,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub delay: Option<exec::Delay>,
    /// Tasks running inline on runtime threads now, at most `inline_limit`.
    pub inline_active: AtomicU32,
    /// The runtime's threads less one: one is always left for messages.
    pub inline_limit: u32,
    /// Sync tasks reported as timed out that still run.
    /// Fetches being served now (at most `exec::MAX_FETCHES`; past it a
    /// fetch is answered "busy" at once).
    pub fetches: AtomicU32,
    pub abandoned: AtomicU32,
    /// Tasks waiting for their owner to confirm their start notice; bounded
    /// by the tasks running here.
    pub confirms: Mutex<std::collections::HashMap<dfut_net::wire::ObjectId, exec::ConfirmSlot>>,
    /// The owners served here, by secret.
    owners: Mutex<owners::Owners>,
    /// How long an owner may stay disconnected before its objects go.
    owner_grace: Duration,
    /// This worker's host identity (see [`host_id`]).
    pub host: String,
    /// Its directory of shared-memory objects, unless shared memory is off.
    pub shm: Option<crate::shm::Region>,
    /// Its spill directory, unless spilling is off.
    pub spill: Option<crate::shm::Region>,
    /// Bytes its store keeps in memory (0: no limit).
    pub store_limit: u64,
    /// Large arguments pushed by owners, until their task claims them.
    pub pushed: Mutex<pushed::Pushed>,
    /// The newest connection of each owner with one open (to ask it about
    /// references); bounded by the open connections.
    owner_links: Mutex<std::collections::HashMap<u64, Link>>,
    /// Connections of owners that asked for what this worker prints
    /// (`WantLogs`); bounded by the open connections (closed ones are
    /// dropped at each flush).
    pub log_links: Mutex<Vec<Link>>,
    /// The tasks held here and the most recent ended ones, for listings
    /// and timelines (bounded: see `tasklog`).
    pub tasks: tasklog::TaskLog,
    /// Questions about references waiting for owners' answers.
    ref_queries: Mutex<listing::RefQueries>,
    /// Set by [`Worker::shutdown`]: stop reconnecting to the scheduler.
    stopping: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn load(&self) -> WorkerLoad {
        let store = lock(&self.store);
        let usage = store.usage();
        let stats = self.client.stats();
        // `WorkerLoad` is #[non_exhaustive] (in dfut-net): no struct literal.
        let mut load = WorkerLoad::default();
        load.running = self.running.load(Ordering::Relaxed);
        load.queued = self.queued.load(Ordering::Relaxed);
        load.objects = store.len() as u64;
        load.object_bytes = store.bytes();
        load.shared_bytes = usage.shared;
        load.spilled_bytes = usage.disk;
        load.spilled_objects = usage.disk_objects;
        load.fetched_bytes = stats.fetched_bytes;
        load.mapped_bytes = stats.shared_bytes;
        load.tasks_done = self.done.load(Ordering::Relaxed);
        load.tasks_failed = self.failed.load(Ordering::Relaxed);
        load.abandoned = self.abandoned.load(Ordering::Relaxed);
        load.unhealthy = load.abandoned > deadline::MAX_ABANDONED;
        load
    }
}

/// Starts a worker on the current runtime.
pub(crate) async fn start(config: WorkerConfig, credential: ClusterCredential) -> Result<Worker> {
    crate::registry::check_unique()?;
    exec::record_panic_locations();
    if config.gpu_count() > 0 {
        open_gpu()?;
    }
    let scheduler: SocketAddr = config.scheduler.parse().map_err(|e| {
        Error::Config(format!("scheduler address `{}`: {e}", config.scheduler).into())
    })?;
    let bind: SocketAddr = format!("{}:{}", config.host, config.port)
        .parse()
        .map_err(|e| {
            Error::Config(format!("listen address `{}:{}`: {e}", config.host, config.port).into())
        })?;
    let endpoint = Endpoint::bind(bind, &credential, crate::limits::endpoint_options())?;
    let local = endpoint.local_addr()?;
    let id = rand::random::<u64>();
    let addr: SocketAddr = match &config.advertise {
        Some(a) => a.parse().map_err(|e| {
            Error::Config(crate::Cause::context(
                format!("advertised address `{a}`"),
                e,
            ))
        })?,
        // Listening on every interface: the address our packets to the
        // scheduler leave from is one the cluster can reach.
        None if local.ip().is_unspecified() => match route_source(scheduler) {
            Ok(ip) => SocketAddr::new(ip, local.port()),
            Err(e) => {
                return Err(Error::Config(
                    format!(
                        "listening on {local}: cannot tell which address to advertise \
                     ({e}); pass --advertise"
                    )
                    .into(),
                ));
            }
        },
        None => local,
    };
    let host = config.host_id.clone().unwrap_or_else(host_id);
    let shm = match crate::shm::root() {
        Some(root) => match crate::shm::Region::create(&root) {
            Ok(r) => Some(r.ahead_of_time()),
            Err(e) => {
                tracing::warn!("no shared memory under {}: {e}", root.display());
                None
            }
        },
        None => None,
    };
    let client = Client::new(
        id,
        endpoint.clone(),
        tokio::runtime::Handle::current(),
        None,
        shm.as_ref().map(|_| host.clone()),
    );
    client.follow_scheduler(scheduler).await?;
    let mut info = WorkerInfo::default();
    info.id = id;
    info.addr = addr.to_string();
    info.max_concurrent = config.slots();
    info.hw_generation = config.hw_generation;
    let capacity = config.capacity();
    info.gpu = capacity.gpus > 0;
    info.gpus = capacity.gpus;
    info.memory_mb = capacity.memory_mb;
    info.resources = capacity.custom.clone();
    info.pid = std::process::id();
    info.speed = calibrate();
    info.host = host.clone();
    let spill = match config.spill_root() {
        Some(root) => Some(crate::shm::Region::create(&root).map_err(|e| {
            Error::Config(format!("spill directory under {}: {e}", root.display()).into())
        })?),
        None => None,
    };
    let store_limit = config.store_limit();
    let store = Store::with_limit(store::Limit {
        memory: store_limit,
        spill_dir: spill.as_ref().map(|r| r.dir().to_owned()),
    });
    // Thread pools started now, from a normal thread: one first started by
    // a background task would keep its lowest priority (runner::on_lane).
    if let Err(e) = monitor::handle() {
        tracing::warn!("{e}");
    }
    #[cfg(feature = "matrix")]
    crate::matrix::start_thread_pool();
    let shared = Arc::new(Shared {
        addr,
        client: client.clone(),
        store: Mutex::new(store),
        runner: {
            let rt = tokio::runtime::Handle::current();
            let lane = rt.clone();
            Runner::new(
                config.slots(),
                move |f| runner::spawn_blocking(&rt, f),
                move |f| runner::background_thread(lane.clone(), f),
            )
        },
        slots: config.slots().max(1),
        ledger: ledger::Ledger::new(capacity),
        aborts: Mutex::new(std::collections::HashMap::new()),
        running: AtomicU32::new(0),
        queued: AtomicU32::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        delay: exec::Delay::from_config(&config),
        inline_active: AtomicU32::new(0),
        inline_limit: {
            let threads = tokio::runtime::Handle::current().metrics().num_workers();
            u32::try_from(threads.saturating_sub(1)).unwrap_or(u32::MAX)
        },
        abandoned: AtomicU32::new(0),
        fetches: AtomicU32::new(0),
        confirms: Mutex::new(std::collections::HashMap::new()),
        owners: Mutex::new(owners::Owners::default()),
        owner_grace: Duration::from_millis(config.owner_grace_ms),
        host: host.clone(),
        shm,
        spill,
        store_limit,
        pushed: Mutex::new(pushed::Pushed::default()),
        owner_links: Mutex::new(std::collections::HashMap::new()),
        ref_queries: Mutex::new(listing::RefQueries::default()),
        tasks: tasklog::TaskLog::default(),
        log_links: Mutex::new(Vec::new()),
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    // Heartbeats run on the monitor thread, on an endpoint of their own:
    // no task, however it blocks this worker's threads, can delay them.
    let interval = Duration::from_millis(config.heartbeat_ms.max(10));
    let (registered, first) = tokio::sync::oneshot::channel();
    monitor::handle()?.spawn(follow_scheduler(
        shared.clone(),
        (credential, SocketAddr::new(bind.ip(), 0)),
        scheduler,
        info,
        interval,
        registered,
    ));
    first.await.map_err(|_| {
        Error::Process("the monitor thread stopped before this worker registered".into())
    })??;
    tracing::info!(
        listen = %local,
        advertise = %addr,
        host,
        id = format_args!("{id:x}"),
        "worker started"
    );
    let acceptor = shared.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let shared = acceptor.clone();
            tokio::spawn(async move {
                let peer = incoming.remote_addr();
                match incoming.establish().await {
                    Ok((link, inbox)) => serve_link(shared, link, inbox, None, Vec::new()).await,
                    Err(e) => dfut_net::refusals::refused(peer, &e),
                }
            });
        }
    });
    Ok(Worker { client, shared })
}

/// Sends what this process prints to the owners that asked, every
/// `output::FLUSH_EVERY`, until the worker is gone.
async fn forward_output(shared: std::sync::Weak<Shared>, output: Arc<output::Output>) {
    let pid = std::process::id();
    let mut tick = tokio::time::interval(output::FLUSH_EVERY);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        lock(&shared.log_links).retain(Link::is_open);
        let (lines, dropped) = output.take();
        if lines.is_empty() && dropped == 0 {
            continue;
        }
        let batch = Message::Logs {
            pid,
            lines,
            dropped,
        };
        lock(&shared.log_links).retain(|l| l.send(batch.clone()).is_ok());
    }
}

/// The local address the kernel sends from to reach `peer`: a connected
/// UDP socket is given its source address by routing, and sends nothing.
fn route_source(peer: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(peer)?;
    Ok(socket.local_addr()?.ip())
}

fn take(slot: &Mutex<Option<Inbox>>) -> Option<Inbox> {
    lock(slot).take()
}

/// Accepts a batch of tasks. Should a task running inline on this reader
/// block, the [`exec::Handoff`] moves the inbox, with the rest of the batch
/// to accept first, to a new reader.
fn serve_batch(
    shared: &Arc<Shared>,
    link: &Link,
    slot: &Arc<Mutex<Option<Inbox>>>,
    owner: Option<u64>,
    tasks: Vec<TaskSpec>,
    replies: &Replies,
    lifo_dirty: &mut bool,
) {
    let batch = Arc::new(Mutex::new(std::collections::VecDeque::from(tasks)));
    let handoff: exec::Handoff = {
        let (shared, link, slot, batch, replies) = (
            shared.clone(),
            link.clone(),
            slot.clone(),
            batch.clone(),
            replies.clone(),
        );
        Arc::new(move || {
            send_replies(&link, &replies);
            if let Some(inbox) = take(&slot) {
                let rest: Vec<TaskSpec> = lock(&batch).drain(..).collect();
                let next = serve_boxed(shared.clone(), link.clone(), inbox, owner, rest);
                shared.client.handle().spawn(next);
            }
        })
    };
    let _serving = monitor::serving(&handoff);
    let mut reader = exec::Reader {
        handoff: &handoff,
        lifo_dirty: *lifo_dirty,
        replies,
    };
    loop {
        let Some(task) = lock(&batch).pop_front() else {
            break;
        };
        exec::accept(shared, link.clone(), task, &mut reader);
    }
    *lifo_dirty = reader.lifo_dirty;
    if lock(replies).len() >= MAX_HELD_REPLIES {
        // The writer it wakes waits in this thread's LIFO slot.
        *lifo_dirty |= send_replies(link, replies);
    }
}

/// Replies of tasks run inline on a connection's reader, held until the
/// reader waits for its next message (or is handed off, or holds
/// [`MAX_HELD_REPLIES`]): the connection's writer is then woken once per
/// burst, when the reader yields, so no inline run finds it waiting in
/// its thread's LIFO slot (see `exec::InlinePermit`).
pub(crate) type Replies = Arc<Mutex<Vec<Message>>>;

/// Replies a reader holds at most before it sends them.
const MAX_HELD_REPLIES: usize = 256;

/// Sends the replies held; whether there were any.
fn send_replies(link: &Link, replies: &Mutex<Vec<Message>>) -> bool {
    let out: Vec<Message> = lock(replies).drain(..).collect();
    let sent = !out.is_empty();
    for m in out {
        let _ = link.send(m);
    }
    sent
}

/// [`serve_link`] as a boxed future, for a reader that hands itself off.
fn serve_boxed(
    shared: Arc<Shared>,
    link: Link,
    inbox: Inbox,
    owner: Option<u64>,
    first: Vec<TaskSpec>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(serve_link(shared, link, inbox, owner, first))
}

/// Sends who we are and what we offer to the scheduler.
fn register(link: &Link, info: &WorkerInfo) -> Result<()> {
    link.send(Message::Hello {
        node: info.id,
        role: Role::Worker,
        secret: 0,
    })?;
    link.send(Message::Register(info.clone()))?;
    Ok(())
}

/// Keeps this worker a member, on the monitor thread: binds an endpoint of
/// its own, registers (reporting the first attempt's outcome on
/// `registered`), sends heartbeats with its load, registers again when the
/// scheduler asks (it dropped us while we were paused or cut off, or it
/// restarted), and on a lost connection reconnects with backoff (100 ms
/// doubling to 2 s). Tasks keep running meanwhile; only membership waits.
async fn follow_scheduler(
    shared: Arc<Shared>,
    (credential, bind): (ClusterCredential, SocketAddr),
    scheduler: SocketAddr,
    info: WorkerInfo,
    interval: Duration,
    registered: tokio::sync::oneshot::Sender<Result<()>>,
) {
    let connect = |endpoint: Endpoint| {
        let info = info.clone();
        async move {
            let (link, inbox) = endpoint.connect(scheduler).await?;
            register(&link, &info)?;
            Ok::<_, Error>((link, inbox))
        }
    };
    let first = match Endpoint::bind(bind, &credential, crate::limits::endpoint_options()) {
        Ok(endpoint) => connect(endpoint.clone()).await.map(|s| (endpoint, s)),
        Err(e) => Err(e.into()),
    };
    let (endpoint, first) = match first {
        Ok(ok) => {
            let _ = registered.send(Ok(()));
            ok
        }
        Err(e) => {
            let _ = registered.send(Err(e));
            return;
        }
    };
    let mut session = Some(first);
    let mut backoff = crate::backoff::Backoff::new();
    while !shared.stopping.load(Ordering::Relaxed) {
        let (link, mut inbox) = match session.take() {
            Some(s) => s,
            None => match connect(endpoint.clone()).await {
                Ok(s) => {
                    tracing::info!(%scheduler, "registered with the scheduler again");
                    backoff.reset();
                    s
                }
                Err(e) => {
                    tracing::debug!(%scheduler, "cannot reach the scheduler: {e}");
                    backoff.wait().await;
                    continue;
                }
            },
        };
        let mut tick = tokio::time::interval(interval);
        // The scheduler acknowledges each heartbeat: a dead one sends
        // nothing (and closes nothing), so silence for 10 heartbeats (at
        // least 2 s) means it is gone, and we reconnect (to its restarted
        // self, say) at once instead of after the 10 s idle timeout.
        let silence = (interval * 10).max(Duration::from_secs(2));
        let mut heard = std::time::Instant::now();
        let mut swept = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if swept.elapsed() > SWEEP_EVERY {
                        // What processes of this host left when they died.
                        swept = std::time::Instant::now();
                        crate::shm::sweep_all();
                    }
                    if shared.stopping.load(Ordering::Relaxed) || heard.elapsed() > silence {
                        break;
                    }
                    let now = std::time::Instant::now();
                    lock(&shared.store).expire(now, AWAIT_PATIENCE);
                    lock(&shared.pushed).expire(now, AWAIT_PATIENCE);
                    drop_gone_owners(&shared, now);
                    if link.send(Message::Heartbeat(shared.load())).is_err() {
                        break;
                    }
                }
                msg = inbox.recv() => match msg {
                    Some(Ok(Message::HeartbeatAck)) => heard = std::time::Instant::now(),
                    Some(Ok(Message::RegisterAgain)) => {
                        heard = std::time::Instant::now();
                        tracing::warn!("the scheduler had dropped this worker; registering again");
                        if register(&link, &info).is_err() {
                            break;
                        }
                    }
                    Some(Ok(other)) => tracing::debug!("unexpected from the scheduler: {other:?}"),
                    Some(Err(_)) | None => break,
                },
            }
        }
        link.close("reconnecting");
        if !shared.stopping.load(Ordering::Relaxed) {
            tracing::warn!(%scheduler, "lost the scheduler; reconnecting");
        }
    }
    endpoint.close();
}

/// Serves one connection from an owner or another worker.
///
/// The reader may be handed off: a task running inline on this reader that
/// blocks calls the [`exec::Handoff`], which moves the inbox to a new
/// reader task; this one then returns once its current message is done.
async fn serve_link(
    shared: Arc<Shared>,
    link: Link,
    inbox: Inbox,
    mut owner: Option<u64>,
    first: Vec<TaskSpec>,
) {
    let slot = Arc::new(Mutex::new(Some(inbox)));
    let replies = Replies::default();
    // Whether this thread's LIFO slot may hold a task woken or spawned
    // during this poll (see `exec::InlinePermit`): unknown at first.
    let mut lifo_dirty = true;
    if !first.is_empty() {
        serve_batch(
            &shared,
            &link,
            &slot,
            owner,
            first,
            &replies,
            &mut lifo_dirty,
        );
    }
    loop {
        let Some(mut inbox) = take(&slot) else {
            // Handed to another reader; the task running here as that
            // happened may have left its reply.
            send_replies(&link, &replies);
            return;
        };
        let mut yielded = false;
        let msg = {
            let mut recv = std::pin::pin!(inbox.recv());
            std::future::poll_fn(|cx| {
                let p = recv.as_mut().poll(cx);
                if p.is_pending() {
                    // About to yield: the writer runs next, on this thread.
                    send_replies(&link, &replies);
                    yielded = true;
                }
                p
            })
            .await
        };
        if yielded {
            // A task polled afresh starts with an empty LIFO slot.
            lifo_dirty = false;
        }
        *lock(&slot) = Some(inbox);
        let Some(msg) = msg else { break };
        match msg {
            // A tool (listings, metrics, the scheduler's probe) acts for no
            // owner: it claims none, so it leaves nothing to expire.
            Ok(Message::Hello {
                role: Role::Tool, ..
            }) => {}
            Ok(Message::Hello { node, secret, .. }) if owner.is_none() => {
                if !lock(&shared.owners).claim(node, secret) {
                    tracing::warn!(peer = %link.peer(), node = format_args!("{node:x}"), "refused a connection naming an owner with the wrong secret");
                    link.close("wrong owner secret");
                    break;
                }
                owner = Some(node);
                lock(&shared.owner_links).insert(node, link.clone());
            }
            // Tasks and objects are acted on only for the owner this
            // connection proved to be.
            Ok(Message::Submit(mut tasks)) => {
                tasks.retain(|t| Some(t.id.owner) == owner);
                serve_batch(
                    &shared,
                    &link,
                    &slot,
                    owner,
                    tasks,
                    &replies,
                    &mut lifo_dirty,
                );
            }
            Ok(Message::Fetch { req, id, host }) => {
                exec::serve_fetch(&shared, link.clone(), req, id, host);
                lifo_dirty = true; // the task serving it
            }
            Ok(Message::Free(ids)) => {
                let mut store = lock(&shared.store);
                for id in ids.into_iter().filter(|id| Some(id.owner) == owner) {
                    store.free(id);
                }
                lifo_dirty = true; // readers told it is gone
            }
            Ok(Message::Cancel(mut ids)) => {
                ids.retain(|id| Some(id.owner) == owner);
                exec::cancel(&shared, ids);
                lifo_dirty = true; // tasks aborted or woken
            }
            Ok(Message::Confirmed(id)) => exec::confirmed(&shared, id),
            Ok(Message::Bulk { req, payload }) => {
                if let (Some(node), Some(bytes)) = (owner, payload.into_shared()) {
                    let blob = Arc::new(crate::blob::Bytes::from(bytes));
                    lock(&shared.pushed).arrive((node, req), blob, std::time::Instant::now());
                    lifo_dirty = true; // a task waiting for it
                }
            }
            Ok(Message::ObjectsRequest { req, limit }) => {
                tokio::spawn(listing::serve(shared.clone(), link.clone(), req, limit));
            }
            Ok(Message::TasksRequest { req, limit, state }) => {
                let (shared, link) = (shared.clone(), link.clone());
                tokio::spawn(async move {
                    let worker = shared.addr.to_string();
                    let limit = limit.min(tasklog::MAX_LISTED) as usize;
                    let (tasks, fetches) = shared.tasks.list(&worker, limit, state);
                    let _ = link.send(Message::TasksReply {
                        req,
                        tasks,
                        fetches,
                    });
                });
            }
            // Only a process whose output is captured has lines to send.
            Ok(Message::WantLogs) if output::installed().is_some() => {
                let mut links = lock(&shared.log_links);
                if !links.iter().any(|l| l.id() == link.id()) {
                    links.push(link.clone());
                }
            }
            Ok(Message::WantLogs) => {}
            Ok(Message::MetricsRequest { req }) => {
                let functions = shared.tasks.metrics();
                let _ = link.send(Message::MetricsReply { req, functions });
            }
            Ok(Message::RefReply { req, refs }) => {
                lock(&shared.ref_queries).answered(owner, req, refs);
            }
            Ok(Message::Goodbye) => break,
            Ok(other) => tracing::warn!(peer = %link.peer(), "unexpected message: {other:?}"),
            Err(e) => {
                crate::log_connection_end(link.peer(), &e);
                break;
            }
        }
    }
    send_replies(&link, &replies);
    if let Some(node) = owner {
        // Its objects stay for the grace period: it may reconnect.
        lock(&shared.owners).release(node, std::time::Instant::now());
        let mut links = lock(&shared.owner_links);
        if links.get(&node).is_some_and(|l| l.id() == link.id()) {
            links.remove(&node);
        }
    }
}

/// Drops the objects and queued tasks of owners disconnected for longer
/// than the grace period: nobody is left to free them.
fn drop_gone_owners(shared: &Shared, now: std::time::Instant) {
    let gone = lock(&shared.owners).expire(now, shared.owner_grace);
    for node in gone {
        let ids = lock(&shared.store).ids_of(node);
        tracing::info!(
            owner = format_args!("{node:x}"),
            objects = ids.len(),
            "an owner has been gone past the grace period: dropping its objects and tasks"
        );
        exec::cancel(shared, ids);
    }
}

/// Measures this machine's speed on a fixed, cache-resident mix of float
/// and integer work, relative to the development machine (1.0). Takes a few
/// milliseconds; the best of three runs counts, to shrug off a busy moment.
fn calibrate() -> f32 {
    /// Nanoseconds the reference machine needs for one run.
    const REFERENCE_NS: f64 = 2.0e6;
    let run = || {
        let start = std::time::Instant::now();
        let mut x = 1.0f64;
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u64; 1024];
        for i in 0..1_000_000u64 {
            x = x * 1.000_000_1 + 0.000_001;
            h = (h ^ i).wrapping_mul(0x100_0000_01b3);
            buf[(h % 1024) as usize] ^= h;
        }
        std::hint::black_box((x, buf));
        start.elapsed().as_secs_f64() * 1e9
    };
    let best = (0..3).map(|_| run()).fold(f64::INFINITY, f64::min);
    (REFERENCE_NS / best.max(1.0)) as f32
}

/// Opens this worker's GPU once, for every GPU task; a worker asked to be a
/// GPU worker without a usable GPU does not start.
#[cfg(feature = "gpu")]
fn open_gpu() -> Result<()> {
    use crate::matrix::gpu::GpuContext;
    if GpuContext::worker().is_none() {
        let ctx = GpuContext::new().map_err(|e| {
            Error::Gpu(crate::Cause::context(
                "this worker was started with --gpu",
                e,
            ))
        })?;
        tracing::info!(adapter = ctx.adapter_name(), "GPU ready");
        GpuContext::install(std::sync::Arc::new(ctx));
    }
    Ok(())
}

#[cfg(not(feature = "gpu"))]
fn open_gpu() -> Result<()> {
    Err(Error::Gpu(
        "this worker was started with --gpu but the binary was built without \
         dfut's `gpu` feature"
            .into(),
    ))
}
