//! Starting and joining clusters: [`init`], [`Builder`] and [`Runtime`].
//!
//! With nothing configured, a driver starts an embedded local cluster: the
//! scheduler in-process and worker processes re-executed from the current
//! binary (or a given one), which learn the cluster credential through a
//! pipe that also ties their life to the driver's. With a scheduler address
//! it joins an existing cluster instead. This module manages processes and
//! runtimes; it does not schedule or run tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dfut_net::{ClusterCredential, Endpoint};

use crate::client::Client;
use crate::context::{self, EnterGuard};
use crate::local::LocalWorker;
use crate::scheduler::{self, Scheduler, SchedulerConfig, SchedulerHandle};
use crate::{Error, Result};

/// Environment variable that makes `dfut::init()` run a worker.
pub(crate) const ROLE_ENV: &str = "DFUT_ROLE";

/// Starts dfut for this process.
///
/// In a process started as a worker of a local cluster, it serves tasks and
/// never returns. Otherwise it starts a local cluster (`DFUT_WORKERS`
/// worker processes, default: the number of cores) or, when
/// `DFUT_SCHEDULER=host:port` is set, joins that cluster with the credential
/// from `DFUT_CREDENTIAL_FILE`. The returned [`Runtime`] is the default for
/// every remote call; dropping its last handle stops the local cluster.
///
/// Idempotent: while a runtime started by `init` lives, another call
/// returns a handle to it. In async code use [`init_async`].
///
/// ```no_run
/// #[dfut::remote]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// fn main() -> dfut::Result<()> {
///     let _rt = dfut::init()?;
///     let x = add(1, 2);
///     let y = add(x.clone(), 10);
///     assert_eq!(y.get()?, 13);
///     Ok(())
/// }
/// ```
pub fn init() -> Result<Runtime> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("worker") {
        crate::local::worker_main();
    }
    // A driver logs like its workers (`DFUT_LOG`, default `warn`) unless
    // its program installed a subscriber first.
    crate::init_tracing();
    static RUNNING: Mutex<std::sync::Weak<Inner>> = Mutex::new(std::sync::Weak::new());
    // Held while starting, so concurrent callers share one cluster.
    let mut running = crate::lock(&RUNNING);
    if let Some(inner) = running.upgrade() {
        return Ok(Runtime { inner });
    }
    let rt = Builder::from_env()?.start()?;
    *running = Arc::downgrade(&rt.inner);
    Ok(rt)
}

/// [`init`] for async code (`#[tokio::main]` programs and the like): the
/// blocking start-up runs on a thread of its own, so the caller's runtime
/// keeps going. In a worker process it serves and never completes.
///
/// ```no_run
/// #[dfut::remote]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// #[tokio::main]
/// async fn main() -> dfut::Result<()> {
///     let _rt = dfut::init_async().await?;
///     assert_eq!(add(1, 2).await?, 3);
///     Ok(())
/// }
/// ```
pub async fn init_async() -> Result<Runtime> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dfut-init".into())
        .spawn(move || {
            let _ = tx.send(init());
        })
        .map_err(Error::io("cannot start dfut"))?;
    rx.await
        .map_err(|_| Error::Process("dfut start-up thread ended without an answer".into()))?
}

/// Configures a [`Runtime`].
pub struct Builder {
    workers: Option<usize>,
    in_process: bool,
    join: Option<SocketAddr>,
    bind: Option<SocketAddr>,
    credential: Option<ClusterCredential>,
    worker_program: Option<PathBuf>,
    worker_env: Vec<(String, String)>,
    max_concurrent: Option<u32>,
    worker_options: Vec<WorkerOptions>,
    policy: Option<Box<dyn Scheduler>>,
    policy_name: Option<String>,
    speculation: Option<crate::Speculation>,
    window_per_slot: Option<u32>,
    start_timeout: Duration,
    heartbeat_timeout: Duration,
    http: Option<SocketAddr>,
    worker_logs: bool,
    replace_dead_workers: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("workers", &self.workers)
            .field("in_process", &self.in_process)
            .field("join", &self.join)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workers: None,
            in_process: false,
            join: None,
            bind: None,
            credential: None,
            worker_program: None,
            worker_env: Vec::new(),
            max_concurrent: None,
            worker_options: Vec::new(),
            policy: None,
            policy_name: None,
            speculation: None,
            window_per_slot: None,
            start_timeout: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(2),
            http: None,
            worker_logs: true,
            replace_dead_workers: true,
        }
    }
}

impl Builder {
    /// Reads `DFUT_WORKERS`, `DFUT_SCHEDULER`, `DFUT_CREDENTIAL_FILE`,
    /// `DFUT_BIND`, `DFUT_WINDOW_PER_SLOT`, `DFUT_SCHEDULER_MODE`,
    /// `DFUT_HTTP` (see [`Builder::http`]) and `DFUT_WORKER_LOGS` (`0` to
    /// switch [`Builder::worker_logs`] off).
    pub fn from_env() -> Result<Self> {
        let mut b = Self::default();
        if let Ok(addr) = std::env::var("DFUT_BIND") {
            let addr = addr.parse().map_err(|e| {
                Error::Config(crate::Cause::context(format!("DFUT_BIND=`{addr}`"), e))
            })?;
            b = b.bind(addr);
        }
        if let Ok(n) = std::env::var("DFUT_WORKERS") {
            let n = n.parse().map_err(|e| {
                Error::Config(crate::Cause::context(format!("DFUT_WORKERS=`{n}`"), e))
            })?;
            b = b.workers(n);
        }
        if let Ok(addr) = std::env::var("DFUT_SCHEDULER") {
            let addr = addr.parse().map_err(|e| {
                Error::Config(crate::Cause::context(format!("DFUT_SCHEDULER=`{addr}`"), e))
            })?;
            b = b.join(addr);
        }
        if let Ok(path) = std::env::var("DFUT_CREDENTIAL_FILE") {
            b = b.credential(ClusterCredential::from_file(path)?);
        }
        if let Some(n) = std::env::var("DFUT_WINDOW_PER_SLOT")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            b = b.window_per_slot(n);
        }
        if let Ok(mode) = std::env::var("DFUT_SCHEDULER_MODE") {
            b = b.policy_name(mode);
        }
        if let Ok(v) = std::env::var("DFUT_WORKER_LOGS") {
            b = b.worker_logs(!matches!(v.as_str(), "0" | "false" | "off"));
        }
        if let Ok(addr) = std::env::var("DFUT_HTTP") {
            let addr = addr.parse().map_err(|e| {
                Error::Config(crate::Cause::context(format!("DFUT_HTTP=`{addr}`"), e))
            })?;
            b = b.http(addr);
        }
        Ok(b)
    }

    /// Whether a local worker process that dies is replaced by a new one
    /// (default: yes). The new one starts within 0.2 s of the death, or,
    /// for a worker that died within 30 s of starting, after a wait that
    /// doubles from 0.25 s up to 10 s. Tasks and objects of the dead one
    /// are reported lost or re-run as always; the new worker has a new
    /// identity. Off, a local cluster shrinks as its workers die.
    ///
    /// ```
    /// // Four worker processes; the cluster shrinks as they die.
    /// let builder = dfut::Runtime::builder().workers(4).replace_dead_workers(false);
    /// ```
    pub fn replace_dead_workers(mut self, on: bool) -> Self {
        self.replace_dead_workers = on;
        self
    }

    /// Starts `n` local worker processes (default: the number of cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs `n` workers inside this process (each on its own threads, still
    /// talking QUIC over loopback) instead of separate processes. Meant for
    /// tests and doctests.
    pub fn in_process_workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self.in_process = true;
        self
    }

    /// Joins the cluster whose scheduler listens at `addr` instead of
    /// starting one. Needs [`Builder::credential`].
    pub fn join(mut self, addr: SocketAddr) -> Self {
        self.join = Some(addr);
        self
    }

    /// Binds this process's endpoint (its client, and the scheduler of a
    /// local cluster) to `addr`. Default: `127.0.0.1:0` for a local
    /// cluster, `0.0.0.0:0` (every interface, any port) when joining one,
    /// so that workers on other hosts can answer. Also read from
    /// `DFUT_BIND` by [`Builder::from_env`].
    ///
    /// ```
    /// let rt = dfut::Runtime::builder()
    ///     .in_process_workers(1)
    ///     .bind("127.0.0.1:0".parse().unwrap())
    ///     .start()?;
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Uses this cluster credential (default for a local cluster: a new one).
    pub fn credential(mut self, credential: ClusterCredential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// Starts local workers from this program instead of the current one.
    /// Its `main` must call `dfut::init()` (or `dfut::worker::run`).
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_program = Some(path.into());
        self
    }

    /// Sets an environment variable for local worker processes.
    pub fn worker_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.worker_env.push((key.into(), value.into()));
        self
    }

    /// Task slots per local worker (default: the number of cores).
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Adds one local worker with its own settings (hardware generation,
    /// GPU, injected delay, slots). Workers added this way replace the
    /// count given by [`Builder::workers`].
    ///
    /// ```
    /// use dfut::WorkerOptions;
    ///
    /// let rt = dfut::Runtime::builder()
    ///     .in_process_workers(0)
    ///     .add_worker(WorkerOptions::default().hw_generation(2))
    ///     .add_worker(WorkerOptions::default().hw_generation(3).max_concurrent(4))
    ///     .start()?;
    /// let mut gens: Vec<(u32, u32)> =
    ///     rt.client().workers().iter().map(|w| (w.hw_generation, w.max_concurrent)).collect();
    /// gens.sort();
    /// assert_eq!(gens, [(2, 2), (3, 4)]);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn add_worker(mut self, options: WorkerOptions) -> Self {
        self.worker_options.push(options);
        self
    }

    /// Places tasks with this policy (default: the scheduler's mode, which
    /// is `default` for a local cluster).
    ///
    /// ```
    /// use dfut::scheduler::{Scheduler, TaskNeeds, WorkerView};
    ///
    /// /// Always the worker with the fewest tasks in flight.
    /// struct Emptiest;
    ///
    /// impl Scheduler for Emptiest {
    ///     fn name(&self) -> &str { "emptiest" }
    ///     fn place(&mut self, _: &TaskNeeds<'_>, ws: &[WorkerView]) -> Result<usize, String> {
    ///         (0..ws.len()).min_by_key(|&i| ws[i].inflight).ok_or_else(|| "no worker".into())
    ///     }
    /// }
    ///
    /// #[dfut::remote]
    /// fn double(x: u64) -> u64 { 2 * x }
    ///
    /// let rt = dfut::Runtime::builder().in_process_workers(2).policy(Emptiest).start()?;
    /// let _ctx = rt.enter();
    /// assert_eq!(rt.client().policy_name(), "emptiest");
    /// assert_eq!(double(21).get()?, 42);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn policy(mut self, policy: impl Scheduler) -> Self {
        self.policy = Some(Box::new(policy));
        self
    }

    /// Admission control: at most `n` tasks per slot in flight on a worker
    /// (default 32); more wait at the owner and go to whichever worker frees
    /// room first. A large value sends every task at once (pure push).
    ///
    /// ```
    /// let rt = dfut::Runtime::builder().in_process_workers(1).window_per_slot(2).start()?;
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn window_per_slot(mut self, n: u32) -> Self {
        self.window_per_slot = Some(n.max(1));
        self
    }

    /// Turns on speculative re-execution of stragglers (off by default).
    ///
    /// ```
    /// let rt = dfut::Runtime::builder()
    ///     .in_process_workers(2)
    ///     .speculation(dfut::Speculation::default())
    ///     .start()?;
    /// assert_eq!(rt.client().stats().speculated, 0);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn speculation(mut self, rule: crate::Speculation) -> Self {
        self.speculation = Some(rule);
        self
    }

    /// Places tasks with the built-in policy of this name (see
    /// [`scheduler::POLICY_NAMES`](crate::scheduler::POLICY_NAMES)); an
    /// unknown name makes [`Builder::start`] fail. Also read from
    /// `DFUT_SCHEDULER_MODE` by [`Builder::from_env`].
    ///
    /// ```
    /// let rt = dfut::Runtime::builder().in_process_workers(1).policy_name("load-aware").start()?;
    /// assert_eq!(rt.client().policy_name(), "load-aware");
    /// let bad = dfut::Runtime::builder().in_process_workers(1).policy_name("fastest").start();
    /// assert!(matches!(bad, Err(dfut::Error::Config(_))));
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn policy_name(mut self, name: impl Into<String>) -> Self {
        self.policy_name = Some(name.into());
        self
    }

    /// How long the scheduler waits for a silent worker before dropping it
    /// (default 2 s).
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Serves the local cluster's dashboard and Prometheus metrics over
    /// HTTP on `addr` (port 0: any free port); [`Runtime::dashboard_url`]
    /// gives the page's address with its token. Ignored when joining a
    /// cluster (its scheduler serves them: `dfut scheduler --http`).
    ///
    /// ```
    /// let rt = dfut::Runtime::builder()
    ///     .in_process_workers(1)
    ///     .http("127.0.0.1:0".parse().unwrap())
    ///     .start()?;
    /// let url = rt.dashboard_url().expect("served");
    /// assert!(url.starts_with("http://127.0.0.1:") && url.contains("/?token="));
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }

    /// Whether this driver prints what worker processes print (on by
    /// default): their standard output to its own, their standard error
    /// and `tracing` events to its standard error, each line prefixed
    /// with the worker, as in `(pid=4242, ip=10.0.0.2:40001) hello`; a
    /// `tracing` event from a task also names the task. Every worker
    /// process also keeps its lines in a file on its host
    /// ([`worker::log_dir`](crate::worker::log_dir)), whatever this says.
    ///
    /// ```
    /// let rt = dfut::Runtime::builder()
    ///     .in_process_workers(1)
    ///     .worker_logs(false)
    ///     .start()?;
    /// assert_eq!(rt.client().stats().worker_log_lines, 0);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn worker_logs(mut self, on: bool) -> Self {
        self.worker_logs = on;
        self
    }

    /// Starts the runtime: the cluster (unless joining one) and this
    /// process's client. Returns once every local worker has registered.
    pub fn start(self) -> Result<Runtime> {
        crate::registry::check_unique()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(runtime_threads("DFUT_DRIVER_THREADS", 2))
            .thread_name("dfut-driver")
            .enable_all()
            .build()
            .map_err(Error::io("cannot start the runtime"))?;
        let credential = match (self.credential, self.join) {
            (Some(c), _) => c,
            (None, None) => ClusterCredential::generate()?,
            (None, Some(addr)) => {
                return Err(Error::Auth(format!(
                    "joining the cluster at {addr} needs its credential \
                     (Builder::credential or DFUT_CREDENTIAL_FILE)"
                )));
            }
        };
        let policy = match (self.policy, &self.policy_name) {
            (Some(p), _) => Some(p),
            (None, Some(name)) => Some(scheduler::policy_by_name(name)?),
            (None, None) => None,
        };
        let mode = policy
            .as_ref()
            .map_or("default".to_owned(), |p| p.name().to_owned());
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind = self.bind.unwrap_or(match self.join {
            Some(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            None => loopback,
        });
        let (scheduler, scheduler_addr) = match self.join {
            Some(addr) => (None, addr),
            None => {
                let mut config = SchedulerConfig::new(SocketAddr::new(bind.ip(), 0));
                config.heartbeat_timeout = self.heartbeat_timeout;
                config.mode = mode;
                config.http = self.http;
                let _enter = rt.enter();
                let handle = scheduler::serve(config, &credential)?;
                let addr = handle.addr();
                (Some(handle), addr)
            }
        };
        let client = {
            let _enter = rt.enter();
            let endpoint = Endpoint::bind(bind, &credential, crate::limits::endpoint_options())?;
            tracing::info!(listen = %endpoint.local_addr()?, scheduler = %scheduler_addr, "driver started");
            let node = rand::random::<u64>();
            Client::new(
                node,
                endpoint,
                rt.handle().clone(),
                policy,
                crate::shm::root().map(|_| crate::worker::host_id()),
            )
        };
        if let Some(n) = self.window_per_slot {
            client.set_window_per_slot(n);
        }
        // A worker process starting a driver prints nothing of others:
        // its output is captured and sent on already.
        client.set_worker_logs(self.worker_logs && !crate::worker::output_captured());
        rt.block_on(client.follow_scheduler(scheduler_addr))?;
        if let Some(rule) = self.speculation {
            client.start_speculation(rule);
        }

        let runtime = Runtime {
            inner: Arc::new(Inner {
                client,
                scheduler,
                scheduler_addr,
                credential,
                workers: Arc::new(Mutex::new(Vec::new())),
                replacer: std::sync::OnceLock::new(),
                rt: Some(rt),
            }),
        };
        let mut specs = Vec::new();
        let wanted = if self.join.is_some() {
            // Joining: wait for the cluster to have workers at all.
            self.workers.unwrap_or(1)
        } else {
            let options = if self.worker_options.is_empty() {
                let n = self.workers.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1)
                });
                let defaults = WorkerOptions {
                    max_concurrent: self.max_concurrent,
                    ..WorkerOptions::default()
                };
                vec![defaults; n]
            } else {
                self.worker_options.clone()
            };
            for opts in &options {
                let spec = crate::local::Spec {
                    scheduler: scheduler_addr,
                    credential: runtime.inner.credential.clone(),
                    program: self.worker_program.clone(),
                    env: self.worker_env.clone(),
                    options: opts.clone(),
                };
                let w = if self.in_process {
                    LocalWorker::in_process(&spec)?
                } else {
                    LocalWorker::spawn(&spec)?
                };
                runtime.lock_workers().push(w);
                specs.push(spec);
            }
            options.len()
        };
        let timeout = self.start_timeout;
        let started = std::time::Instant::now();
        loop {
            let wait = runtime.inner.client.wait_for_workers(wanted);
            let step = Duration::from_millis(50);
            if runtime
                .rt_ref()
                .block_on(async { tokio::time::timeout(step, wait).await })
                .is_ok()
            {
                break;
            }
            // A worker that exits before registering will never register.
            if let Some(failure) = runtime
                .lock_workers()
                .iter_mut()
                .find_map(LocalWorker::exited)
            {
                return Err(Error::Process(format!(
                    "a worker exited before registering ({failure}); its error is on stderr"
                )));
            }
            if started.elapsed() > timeout {
                return Err(Error::Process(format!(
                    "only {} of {wanted} workers registered within {timeout:?}",
                    runtime.inner.client.workers().len()
                )));
            }
        }
        if self.replace_dead_workers && !self.in_process && !specs.is_empty() {
            let replacer = crate::local::Replacer::start(Arc::clone(&runtime.inner.workers), specs)
                .map_err(Error::io(
                    "cannot start the thread that replaces dead workers",
                ))?;
            // Set once, here: nothing else sets it.
            let _ = runtime.inner.replacer.set(replacer);
        }
        context::set_default_if_unset(&runtime.inner.client);
        Ok(runtime)
    }
}

/// A running dfut runtime: this process's client and, for a local cluster,
/// the scheduler and workers it started. A cheap handle: clones share the
/// runtime, and dropping the last one stops it. Handles of remote calls
/// that outlive it return [`Error::NoRuntime`] at once.
#[must_use = "dropping the last handle of a Runtime stops its local cluster"]
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    scheduler: Option<SchedulerHandle>,
    scheduler_addr: SocketAddr,
    credential: ClusterCredential,
    /// Bounded by the workers asked for: a dead one is replaced in its
    /// place, never added.
    workers: crate::local::Workers,
    /// Replaces dead worker processes (stopped before they are).
    replacer: std::sync::OnceLock<crate::local::Replacer>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("scheduler", &self.inner.scheduler_addr)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder for a runtime.
    ///
    /// ```
    /// let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
    /// assert_eq!(rt.client().workers().len(), 2);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// This process's client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The scheduler's address, to give to workers started elsewhere.
    pub fn scheduler_addr(&self) -> SocketAddr {
        self.inner.scheduler_addr
    }

    /// The dashboard's address with its token, when this runtime's own
    /// scheduler serves one ([`Builder::http`]); Prometheus metrics are at
    /// `/metrics` on the same server, with the token as
    /// `Authorization: Bearer <token>`.
    pub fn dashboard_url(&self) -> Option<String> {
        self.inner.scheduler.as_ref()?.dashboard_url()
    }

    /// The cluster credential, to give to workers started elsewhere.
    pub fn credential(&self) -> &ClusterCredential {
        &self.inner.credential
    }

    /// Makes this runtime the one remote calls on this thread use, until
    /// the guard is dropped.
    ///
    /// ```
    /// # #[dfut::remote] fn id(x: u32) -> u32 { x }
    /// let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// let _guard = rt.enter();
    /// assert_eq!(id(7).get()?, 7);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn enter(&self) -> EnterGuard {
        context::enter(self.inner.client.clone())
    }

    /// Runs a future to completion on this runtime, with it entered. Called
    /// from inside async code (where blocking the caller's runtime thread
    /// is not allowed) it runs the future on a thread of its own.
    ///
    /// ```
    /// # #[dfut::remote] fn id(x: u32) -> u32 { x }
    /// let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// assert_eq!(rt.block_on(id(7))?, 7);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let run = move || {
            let _guard = self.enter();
            self.rt_ref().block_on(fut)
        };
        let Ok(caller) = tokio::runtime::Handle::try_current() else {
            return run();
        };
        let on_thread = || {
            std::thread::scope(|s| match s.spawn(run).join() {
                Ok(out) => out,
                // The future panicked: carry the panic to the caller, as a
                // direct `block_on` would.
                Err(panic) => std::panic::resume_unwind(panic),
            })
        };
        match caller.runtime_flavor() {
            // Let the caller's runtime move its other work elsewhere meanwhile.
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(on_thread),
            _ => on_thread(),
        }
    }

    /// Process ids of the local worker processes (empty for in-process
    /// workers and joined clusters): those running now. A worker that
    /// died is left out until its replacement starts.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.lock_workers()
            .iter_mut()
            .filter_map(|w| match w.exited() {
                None => w.pid(),
                Some(_) => None,
            })
            .collect()
    }

    /// Kills local worker `index` at once, as a crash would. For testing
    /// fault tolerance. Like any dead worker, it is replaced by a new
    /// process unless [`Builder::replace_dead_workers`] is off.
    pub fn kill_worker(&self, index: usize) -> Result<()> {
        let mut workers = self.lock_workers();
        let w = workers
            .get_mut(index)
            .ok_or_else(|| Error::Config(format!("no local worker {index}").into()))?;
        w.kill()
    }

    /// Drops this handle; the runtime stops when its last handle goes
    /// (also done on drop).
    pub fn shutdown(self) {}

    fn rt_ref(&self) -> &tokio::runtime::Runtime {
        // Set in `start` and taken only in `drop`.
        self.inner
            .rt
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime used after drop"))
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<LocalWorker>> {
        self.inner.lock_workers()
    }
}

impl Inner {
    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<LocalWorker>> {
        crate::lock(&self.workers)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        context::clear_default(&self.client);
        self.client.close();
        // No replacement for the workers about to stop.
        drop(self.replacer.take());
        // Asked first, so they remove their shared memory as they exit;
        // killed if they take longer than a second.
        let mut workers: Vec<_> = self.lock_workers().drain(..).collect();
        for w in &mut workers {
            w.ask_to_exit();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let in_process = workers.iter().any(LocalWorker::is_in_process);
        for mut w in workers {
            w.stop(deadline);
        }
        if in_process {
            // In-process workers' state may outlive them in detached
            // tasks: their shared memory goes now, with the cluster.
            crate::shm::remove_own();
        }
        if let Some(s) = &self.scheduler {
            s.shutdown();
        }
        self.client.endpoint().close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Runtime threads: `var` from the environment, else `default`.
pub(crate) fn runtime_threads(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Settings of one local worker, for [`Builder::add_worker`]: the study
/// project's knobs.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Task slots (default: the number of cores; 2 for in-process workers).
    pub max_concurrent: Option<u32>,
    /// Hardware generation (default 1).
    pub hw_generation: Option<u32>,
    /// Whether it runs GPU tasks.
    pub gpu: bool,
    /// Injected delay: each task first sleeps a uniform random time in
    /// [0, this] milliseconds (0: none).
    pub add_delay_ms: u64,
    /// Seed of the injected delays.
    pub delay_seed: Option<u64>,
    /// GPUs it declares (default: 1 if `gpu`, else 0).
    pub gpus: Option<u32>,
    /// Memory it declares, in MiB (default: the machine's).
    pub memory_mb: Option<u64>,
    /// Custom resources it declares, by name.
    pub resources: Vec<(String, u32)>,
}

impl WorkerOptions {
    /// Sets the GPUs it declares (more than 0 makes it a GPU worker).
    pub fn gpus(mut self, n: u32) -> Self {
        self.gpus = Some(n);
        self
    }

    /// Sets the memory it declares, in MiB.
    pub fn memory_mb(mut self, mb: u64) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    /// Declares `amount` units of the custom resource `name`.
    ///
    /// ```
    /// let rt = dfut::Runtime::builder()
    ///     .in_process_workers(0)
    ///     .add_worker(dfut::WorkerOptions::default().resource("disk", 1))
    ///     .start()?;
    /// assert_eq!(rt.client().workers()[0].custom_amount("disk"), 1);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn resource(mut self, name: impl Into<String>, amount: u32) -> Self {
        crate::scheduler::set_amount(&mut self.resources, name.into(), amount);
        self
    }

    /// Sets the task slots.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Sets the hardware generation.
    pub fn hw_generation(mut self, generation: u32) -> Self {
        self.hw_generation = Some(generation);
        self
    }

    /// Makes it a GPU worker.
    pub fn gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }

    /// Injects a random delay of up to `max_ms` milliseconds before each
    /// task, drawn from a generator seeded with `seed`.
    pub fn add_delay(mut self, max_ms: u64, seed: u64) -> Self {
        self.add_delay_ms = max_ms;
        self.delay_seed = Some(seed);
        self
    }

    /// Environment variables that give a worker process these settings.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(n) = self.max_concurrent {
            env.push(("DFUT_MAX_CONCURRENT", n.to_string()));
        }
        if let Some(g) = self.hw_generation {
            env.push(("DFUT_HW_GENERATION", g.to_string()));
        }
        if self.gpu {
            env.push(("DFUT_GPU", "true".to_owned()));
        }
        if self.add_delay_ms > 0 {
            env.push(("DFUT_ADD_DELAY_MS", self.add_delay_ms.to_string()));
        }
        if let Some(seed) = self.delay_seed {
            env.push(("DFUT_DELAY_SEED", seed.to_string()));
        }
        if let Some(n) = self.gpus {
            env.push(("DFUT_GPUS", n.to_string()));
        }
        if let Some(mb) = self.memory_mb {
            env.push(("DFUT_MEMORY_MB", mb.to_string()));
        }
        if !self.resources.is_empty() {
            let list: Vec<String> = self
                .resources
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect();
            env.push(("DFUT_RESOURCES", list.join(",")));
        }
        env
    }

    /// Applies these settings to a worker configuration.
    pub(crate) fn apply(&self, config: &mut crate::worker::WorkerConfig) {
        config.max_concurrent = self.max_concurrent.or(config.max_concurrent);
        if let Some(g) = self.hw_generation {
            config.hw_generation = g;
        }
        config.gpu = self.gpu;
        config.add_delay_ms = self.add_delay_ms;
        config.delay_seed = self.delay_seed;
        config.gpus = self.gpus.or(config.gpus);
        config.memory_mb = self.memory_mb.or(config.memory_mb);
        config.resources.extend(self.resources.iter().cloned());
    }
}
