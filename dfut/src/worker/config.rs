//! How a worker is configured: from command-line flags, environment
//! variables, or a builder.
//!
//! The knobs are the study project's: port, concurrent tasks, hardware
//! generation, GPU, injected random delay. This module only describes a
//! worker; [`crate::worker::run`] starts one.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A worker's configuration.
///
/// From flags (`WorkerConfig::parse()`, every flag also readable from the
/// environment variable shown in `--help`) or built in code:
///
/// ```
/// use dfut::worker::WorkerConfig;
///
/// let config = WorkerConfig::new("127.0.0.1:50051")
///     .port(50052)
///     .max_concurrent(4)
///     .hw_generation(2)
///     .add_delay(std::time::Duration::from_millis(50));
/// assert_eq!(config.max_concurrent, Some(4));
///
/// use clap::Parser;
/// let from_flags = WorkerConfig::try_parse_from(
///     ["worker", "--scheduler", "10.0.0.1:50051", "--port", "50052", "--gpu"],
/// ).unwrap();
/// assert!(from_flags.gpu);
/// ```
#[derive(Debug, Clone, Parser)]
#[command(name = "worker", about = "Run a dfut worker")]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Address of the scheduler to register with.
    #[arg(long, env = "DFUT_SCHEDULER")]
    pub scheduler: String,
    /// Interface to listen on.
    #[arg(long, env = "DFUT_WORKER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// UDP port to listen on (0: any free port).
    #[arg(long, env = "DFUT_WORKER_PORT", default_value_t = 0)]
    pub port: u16,
    /// Address other processes use to reach this worker, when it differs
    /// from the listening address (e.g. behind NAT or when listening on
    /// 0.0.0.0).
    #[arg(long, env = "DFUT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long, env = "DFUT_MAX_CONCURRENT")]
    pub max_concurrent: Option<u32>,
    /// Hardware generation, higher is faster; used by load-aware placement.
    #[arg(long, env = "DFUT_HW_GENERATION", default_value_t = 1)]
    pub hw_generation: u32,
    /// Run GPU tasks.
    #[arg(long, env = "DFUT_GPU")]
    pub gpu: bool,
    /// Inject a random delay before each task, uniform in [0, this many
    /// milliseconds], to simulate a straggler.
    #[arg(long = "add-delay", env = "DFUT_ADD_DELAY_MS", default_value_t = 0)]
    pub add_delay_ms: u64,
    /// Seed of the injected delays (default: random).
    #[arg(long, env = "DFUT_DELAY_SEED")]
    pub delay_seed: Option<u64>,
    /// PEM file holding the cluster credential (else `DFUT_CREDENTIAL`
    /// holds the PEM text itself).
    #[arg(long, env = "DFUT_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// Milliseconds between heartbeats to the scheduler.
    #[arg(long, env = "DFUT_HEARTBEAT_MS", default_value_t = 200)]
    pub heartbeat_ms: u64,
    /// This machine's identity: processes with the same one share
    /// host-local resources (default: `/etc/machine-id`, else the host
    /// name).
    #[arg(long, env = "DFUT_HOST_ID")]
    pub host_id: Option<String>,
    /// Milliseconds an owner may stay disconnected before its objects here
    /// are freed and its queued tasks dropped (a driver paused or cut off
    /// for less keeps everything).
    #[arg(long, env = "DFUT_OWNER_GRACE_MS", default_value_t = 30_000)]
    pub owner_grace_ms: u64,
    /// Bytes of objects kept in memory (heap and shared memory together);
    /// past it, the oldest are spilled to disk (default: 30 % of the
    /// machine's memory; 0: no limit).
    #[arg(long, env = "DFUT_OBJECT_STORE_BYTES")]
    pub object_store_bytes: Option<u64>,
    /// Directory objects are spilled to past the store's limit (default:
    /// the system's temporary directory; `off`: no spilling, and a result
    /// that does not fit fails its task with a `StoreFull` error).
    #[arg(long, env = "DFUT_SPILL_DIR")]
    pub spill_dir: Option<String>,
}

impl WorkerConfig {
    /// A configuration with defaults, registering with `scheduler`.
    pub fn new(scheduler: impl Into<String>) -> Self {
        Self {
            scheduler: scheduler.into(),
            host: "127.0.0.1".into(),
            port: 0,
            advertise: None,
            max_concurrent: None,
            hw_generation: 1,
            gpu: false,
            add_delay_ms: 0,
            delay_seed: None,
            credential_file: None,
            heartbeat_ms: 200,
            host_id: None,
            owner_grace_ms: 30_000,
            object_store_bytes: None,
            spill_dir: None,
        }
    }

    /// Sets the bytes of objects kept in memory before spilling (0: no
    /// limit).
    pub fn object_store_bytes(mut self, bytes: u64) -> Self {
        self.object_store_bytes = Some(bytes);
        self
    }

    /// Sets the spill directory (`"off"`: no spilling).
    pub fn spill_dir(mut self, dir: impl Into<String>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// The store's memory limit: the configured one, else 30 % of memory.
    pub(crate) fn store_limit(&self) -> u64 {
        self.object_store_bytes
            .unwrap_or_else(|| total_memory().map_or(0, |m| m / 10 * 3))
    }

    /// Where spilled objects go, unless spilling is off.
    pub(crate) fn spill_root(&self) -> Option<PathBuf> {
        match self.spill_dir.as_deref() {
            Some("off" | "none" | "") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => Some(std::env::temp_dir()),
        }
    }

    /// Sets the UDP port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the interface to listen on.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets how many tasks run at once.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Sets the hardware generation.
    pub fn hw_generation(mut self, generation: u32) -> Self {
        self.hw_generation = generation;
        self
    }

    /// Makes this a GPU worker.
    pub fn gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }

    /// Injects a random delay up to `max` before each task.
    pub fn add_delay(mut self, max: Duration) -> Self {
        self.add_delay_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Reads the cluster credential from this PEM file.
    pub fn credential_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credential_file = Some(path.into());
        self
    }

    /// Sets the address others reach this worker at (default: the listening
    /// address or, when listening on every interface, the local address of
    /// its connection to the scheduler).
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    pub(crate) fn slots(&self) -> u32 {
        self.max_concurrent.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        })
    }
}

/// This machine's identity for host-local sharing: `DFUT_HOST_ID` if set,
/// else `/etc/machine-id`, else the kernel's host name.
///
/// ```
/// assert!(!dfut::worker::host_id().is_empty());
/// ```
pub fn host_id() -> String {
    if let Ok(id) = std::env::var("DFUT_HOST_ID")
        && !id.trim().is_empty()
    {
        return id.trim().to_owned();
    }
    ["/etc/machine-id", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`).
pub(crate) fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
