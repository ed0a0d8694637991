//! How a worker is configured: from environment variables, command-line
//! flags (with the `cli` feature), or a builder.
//!
//! The knobs: port, CPUs (concurrent tasks), hardware generation, GPUs,
//! memory, custom resources, injected random delay. This module only describes a
//! worker; [`crate::worker::run`] starts one.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

/// A worker's configuration.
///
/// From the environment ([`WorkerConfig::from_env`]: `DFUT_SCHEDULER` and
/// the variable named on each field), from flags with the `cli` feature
/// (`WorkerConfig::parse()` from `clap::Parser`, every flag also readable
/// from the same variable), or built in code:
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
/// #[cfg(feature = "cli")]
/// {
///     use clap::Parser;
///     let from_flags = WorkerConfig::try_parse_from(
///         ["worker", "--scheduler", "10.0.0.1:50051", "--port", "50052", "--gpu"],
///     ).unwrap();
///     assert!(from_flags.gpu);
/// }
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Parser))]
#[cfg_attr(feature = "cli", command(name = "worker", about = "Run a dfut worker"))]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Address of the scheduler to register with.
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_SCHEDULER"))]
    pub scheduler: String,
    /// Interface to listen on.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DFUT_WORKER_HOST", default_value = "127.0.0.1")
    )]
    pub host: String,
    /// UDP port to listen on (0: any free port).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DFUT_WORKER_PORT", default_value_t = 0)
    )]
    pub port: u16,
    /// Address other processes use to reach this worker, when it differs
    /// from the listening address (e.g. behind NAT or when listening on
    /// 0.0.0.0).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_ADVERTISE"))]
    pub advertise: Option<String>,
    /// Tasks run at once: its CPUs, or slots (default: the number of
    /// cores). `--cpus` is the same flag.
    #[cfg_attr(
        feature = "cli",
        arg(long, visible_alias = "cpus", env = "DFUT_MAX_CONCURRENT")
    )]
    pub max_concurrent: Option<u32>,
    /// Hardware generation, higher is faster; used by load-aware placement.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DFUT_HW_GENERATION", default_value_t = 1)
    )]
    pub hw_generation: u32,
    /// Run GPU tasks.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DFUT_GPU", value_parser = clap::builder::BoolishValueParser::new())
    )]
    pub gpu: bool,
    /// Inject a random delay before each task, uniform in [0, this many
    /// milliseconds], to simulate a straggler.
    #[cfg_attr(
        feature = "cli",
        arg(long = "add-delay", env = "DFUT_ADD_DELAY_MS", default_value_t = 0)
    )]
    pub add_delay_ms: u64,
    /// Seed of the injected delays (default: random).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_DELAY_SEED"))]
    pub delay_seed: Option<u64>,
    /// PEM file holding the cluster credential (else `DFUT_CREDENTIAL`
    /// holds the PEM text itself).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_CREDENTIAL_FILE"))]
    pub credential_file: Option<PathBuf>,
    /// Milliseconds between heartbeats to the scheduler.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DFUT_HEARTBEAT_MS", default_value_t = 200)
    )]
    pub heartbeat_ms: u64,
    /// This machine's identity: processes with the same one share
    /// host-local resources (default: `/etc/machine-id`, else the host
    /// name).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_HOST_ID"))]
    pub host_id: Option<String>,
    /// Milliseconds an owner may stay disconnected before its objects here
    /// are freed and its queued tasks dropped (a driver paused or cut off
    /// for less keeps everything).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DFUT_OWNER_GRACE_MS", default_value_t = 30_000)
    )]
    pub owner_grace_ms: u64,
    /// Bytes of objects kept in memory (heap and shared memory together);
    /// past it, the oldest are spilled to disk (default: 30 % of the
    /// machine's memory; 0: no limit).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_OBJECT_STORE_BYTES"))]
    pub object_store_bytes: Option<u64>,
    /// Directory objects are spilled to past the store's limit (default:
    /// the system's temporary directory; `off`: no spilling, and a result
    /// that does not fit fails its task with a `StoreFull` error).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_SPILL_DIR"))]
    pub spill_dir: Option<String>,
    /// GPUs it declares (default: 1 with `--gpu`, else 0; more than 0 runs
    /// GPU tasks, as `--gpu` does).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_GPUS"))]
    pub gpus: Option<u32>,
    /// Memory it declares, in MiB, for tasks that reserve some (default:
    /// the machine's memory).
    #[cfg_attr(feature = "cli", arg(long, env = "DFUT_MEMORY_MB"))]
    pub memory_mb: Option<u64>,
    /// Custom resources it declares, `name=amount`, comma-separated or
    /// repeated: `--resources disk=1,licence=4`.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DFUT_RESOURCES", value_delimiter = ',', value_parser = parse_resource)
    )]
    pub resources: Vec<(String, u32)>,
    /// Whether [`run`](super::run) captures what this process prints, to
    /// keep it in a log file and send it to drivers (default: yes; set
    /// off for a worker run on a thread of a process that prints for
    /// itself, such as a test).
    #[cfg_attr(feature = "cli", arg(skip = true))]
    pub capture_output: bool,
}

/// The environment variables [`WorkerConfig::from_env`] reads, in field
/// order (the `cli` feature's flags read the same ones).
pub(crate) const ENV_VARS: [&str; 18] = [
    "DFUT_SCHEDULER",
    "DFUT_WORKER_HOST",
    "DFUT_WORKER_PORT",
    "DFUT_ADVERTISE",
    "DFUT_MAX_CONCURRENT",
    "DFUT_HW_GENERATION",
    "DFUT_GPU",
    "DFUT_ADD_DELAY_MS",
    "DFUT_DELAY_SEED",
    "DFUT_CREDENTIAL_FILE",
    "DFUT_HEARTBEAT_MS",
    "DFUT_HOST_ID",
    "DFUT_OWNER_GRACE_MS",
    "DFUT_OBJECT_STORE_BYTES",
    "DFUT_SPILL_DIR",
    "DFUT_GPUS",
    "DFUT_MEMORY_MB",
    "DFUT_RESOURCES",
];

impl WorkerConfig {
    /// The configuration the environment gives: `DFUT_SCHEDULER` (needed),
    /// `DFUT_WORKER_HOST`, `DFUT_WORKER_PORT`, `DFUT_ADVERTISE`,
    /// `DFUT_MAX_CONCURRENT`, `DFUT_HW_GENERATION`, `DFUT_GPU` (`1`, `true`,
    /// `yes` or `on`), `DFUT_ADD_DELAY_MS`, `DFUT_DELAY_SEED`,
    /// `DFUT_CREDENTIAL_FILE`, `DFUT_HEARTBEAT_MS`, `DFUT_HOST_ID`,
    /// `DFUT_OWNER_GRACE_MS`, `DFUT_OBJECT_STORE_BYTES`, `DFUT_SPILL_DIR`,
    /// `DFUT_GPUS`, `DFUT_MEMORY_MB`, `DFUT_RESOURCES` (`disk=1,licence=4`);
    /// values are trimmed, and unset or empty ones keep their defaults
    /// (but an empty `DFUT_SPILL_DIR` turns spilling off). Needs no feature.
    ///
    /// ```no_run
    /// fn main() -> dfut::Result<()> {
    ///     dfut::worker::run(dfut::worker::WorkerConfig::from_env()?)
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when `DFUT_SCHEDULER` is unset
    /// or a value does not parse.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`WorkerConfig::from_env`] over any source of variables.
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let raw = |name: &str| get(name).map(|v| v.trim().to_owned());
        let get = |name: &str| raw(name).filter(|v| !v.is_empty());
        let scheduler = get(ENV_VARS[0]).ok_or_else(|| {
            Error::Config("a worker needs the scheduler's address: set DFUT_SCHEDULER".into())
        })?;
        let defaults = Self::new(scheduler);
        Ok(Self {
            host: get(ENV_VARS[1]).unwrap_or(defaults.host.clone()),
            port: parsed(&get, ENV_VARS[2])?.unwrap_or(defaults.port),
            advertise: get(ENV_VARS[3]),
            max_concurrent: parsed(&get, ENV_VARS[4])?,
            hw_generation: parsed(&get, ENV_VARS[5])?.unwrap_or(defaults.hw_generation),
            gpu: flag(&get, ENV_VARS[6])?,
            add_delay_ms: parsed(&get, ENV_VARS[7])?.unwrap_or(defaults.add_delay_ms),
            delay_seed: parsed(&get, ENV_VARS[8])?,
            credential_file: get(ENV_VARS[9]).map(PathBuf::from),
            heartbeat_ms: parsed(&get, ENV_VARS[10])?.unwrap_or(defaults.heartbeat_ms),
            host_id: get(ENV_VARS[11]),
            owner_grace_ms: parsed(&get, ENV_VARS[12])?.unwrap_or(defaults.owner_grace_ms),
            object_store_bytes: parsed(&get, ENV_VARS[13])?,
            // Set but empty means off, as `spill_root` reads it.
            spill_dir: raw(ENV_VARS[14]),
            gpus: parsed(&get, ENV_VARS[15])?,
            memory_mb: parsed(&get, ENV_VARS[16])?,
            resources: match get(ENV_VARS[17]) {
                Some(list) => list
                    .split(',')
                    .filter(|item| !item.trim().is_empty())
                    .map(parse_resource)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| Error::Config(format!("{}: {e}", ENV_VARS[17]).into()))?,
                None => Vec::new(),
            },
            ..defaults
        })
    }

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
            gpus: None,
            memory_mb: None,
            resources: Vec::new(),
            capture_output: true,
        }
    }

    /// Sets whether [`run`](super::run) captures what this process prints
    /// (see [`log_dir`](super::log_dir)).
    ///
    /// ```
    /// let config = dfut::worker::WorkerConfig::new("127.0.0.1:50051").capture_output(false);
    /// assert!(!config.capture_output);
    /// ```
    pub fn capture_output(mut self, on: bool) -> Self {
        self.capture_output = on;
        self
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

    /// Sets its CPUs: the slots tasks run in (as
    /// [`max_concurrent`](Self::max_concurrent)).
    pub fn cpus(self, n: u32) -> Self {
        self.max_concurrent(n)
    }

    /// Sets the GPUs it declares (more than 0 runs GPU tasks).
    pub fn gpus(mut self, n: u32) -> Self {
        self.gpus = Some(n);
        self
    }

    /// Sets the memory it declares, in MiB.
    pub fn memory_mb(mut self, mb: u64) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    /// Declares `amount` units of the custom resource `name` (replacing
    /// an earlier amount of it).
    ///
    /// ```
    /// let config = dfut::worker::WorkerConfig::new("127.0.0.1:50051")
    ///     .cpus(8)
    ///     .gpus(2)
    ///     .memory_mb(64 << 10)
    ///     .resource("disk", 1);
    /// assert_eq!(config.resources, [("disk".to_owned(), 1)]);
    /// ```
    pub fn resource(mut self, name: impl Into<String>, amount: u32) -> Self {
        crate::scheduler::set_amount(&mut self.resources, name.into(), amount);
        self
    }

    /// The GPUs it declares: `gpus`, else 1 with `gpu`.
    pub(crate) fn gpu_count(&self) -> u32 {
        self.gpus.unwrap_or(u32::from(self.gpu))
    }

    /// What it declares beyond its slots (memory: the machine's unless
    /// set; a resource named twice counts once, the last amount).
    pub(crate) fn capacity(&self) -> super::ledger::Capacity {
        let mut named = Vec::new();
        for (name, amount) in &self.resources {
            crate::scheduler::set_amount(&mut named, name.clone(), *amount);
        }
        let custom = named
            .into_iter()
            .map(|(name, amount)| dfut_net::wire::ResourceAmount { name, amount })
            .collect();
        super::ledger::Capacity {
            gpus: self.gpu_count(),
            memory_mb: self
                .memory_mb
                .unwrap_or_else(|| total_memory().map_or(u64::MAX, |b| b >> 20)),
            custom,
        }
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

/// The variable `name` parsed as a `T`, if set.
fn parsed<T>(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    get(name)
        .map(|v| {
            v.parse().map_err(|e| {
                Error::Config(crate::Cause::context(
                    format!("{name}={v:?} does not parse"),
                    e,
                ))
            })
        })
        .transpose()
}

/// The variable `name` as a switch (unset: off), with the words clap's
/// `BoolishValueParser` takes for `--gpu`'s variable.
fn flag(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<bool> {
    match get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("0" | "false" | "no" | "off" | "n" | "f") => Ok(false),
        Some("1" | "true" | "yes" | "on" | "y" | "t") => Ok(true),
        Some(v) => Err(Error::Config(
            format!("{name}={v:?} is not a switch: use 1 or 0").into(),
        )),
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
/// One `name=amount` of `--resources`.
pub(crate) fn parse_resource(item: &str) -> std::result::Result<(String, u32), String> {
    let (name, amount) = item
        .trim()
        .split_once('=')
        .ok_or_else(|| format!("`{item}`: expected name=amount"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(format!(
            "`{name}`: a resource name is letters, digits, `_`, `-` and `.`"
        ));
    }
    let amount = amount
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("`{item}`: the amount: {e}"))?;
    Ok((name.to_owned(), amount))
}

pub(crate) fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<WorkerConfig> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        WorkerConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_environment_sets_every_field_and_unset_ones_keep_their_defaults() {
        let c = config(&[
            ("DFUT_SCHEDULER", "10.0.0.1:50051"),
            ("DFUT_WORKER_PORT", "50052"),
            ("DFUT_MAX_CONCURRENT", "3"),
            ("DFUT_GPU", "true"),
            ("DFUT_SPILL_DIR", ""),
            ("DFUT_HOST_ID", " "),
        ])
        .unwrap();
        assert_eq!(
            (c.scheduler.as_str(), c.port, c.max_concurrent, c.gpu),
            ("10.0.0.1:50051", 50052, Some(3), true)
        );
        assert_eq!(
            (c.host.as_str(), c.heartbeat_ms, c.host_id.as_deref()),
            ("127.0.0.1", 200, None)
        );
        assert_eq!(c.spill_root(), None);
        let r = config(&[
            ("DFUT_SCHEDULER", "s:1"),
            ("DFUT_GPUS", "2"),
            ("DFUT_MEMORY_MB", "4096"),
            ("DFUT_RESOURCES", "disk=1, licence=4"),
        ])
        .unwrap();
        assert_eq!((r.gpu_count(), r.memory_mb), (2, Some(4096)));
        assert_eq!(r.capacity().custom.len(), 2);
        assert_eq!(r.resources[1], ("licence".to_owned(), 4));
        let e = config(&[("DFUT_SCHEDULER", "s:1"), ("DFUT_RESOURCES", "disk")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DFUT_RESOURCES") && e.contains("name=amount"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_scheduler_or_a_bad_value_names_its_variable() {
        let e = config(&[]).unwrap_err().to_string();
        assert!(e.contains("DFUT_SCHEDULER"), "{e}");
        let e = config(&[("DFUT_SCHEDULER", "s:1"), ("DFUT_WORKER_PORT", "70000")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DFUT_WORKER_PORT"), "{e}");
        let e = config(&[("DFUT_SCHEDULER", "s:1"), ("DFUT_GPU", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DFUT_GPU"), "{e}");
    }

    /// Resources as flags: `--cpus` is `--max-concurrent`, `--resources`
    /// takes a list or repeats, and a malformed one is refused.
    #[cfg(feature = "cli")]
    #[test]
    fn resources_are_flags_too() {
        use clap::Parser;
        let c = WorkerConfig::try_parse_from([
            "worker",
            "--scheduler",
            "s:1",
            "--cpus",
            "4",
            "--gpus",
            "2",
            "--memory-mb",
            "512",
            "--resources",
            "disk=1,licence=4",
            "--resources",
            "disk=2",
        ])
        .unwrap();
        assert_eq!((c.slots(), c.gpu_count(), c.memory_mb), (4, 2, Some(512)));
        let custom = c.capacity().custom;
        let got: Vec<_> = custom.iter().map(|r| (r.name.as_str(), r.amount)).collect();
        assert_eq!(got, [("licence", 4), ("disk", 2)], "the last disk counts");
        let bad =
            WorkerConfig::try_parse_from(["worker", "--scheduler", "s:1", "--resources", "disk"]);
        assert!(bad.unwrap_err().to_string().contains("name=amount"));
    }

    /// The flags of the `cli` feature read exactly the variables that
    /// `from_env` reads.
    #[cfg(feature = "cli")]
    #[test]
    fn the_flags_read_the_same_variables_as_from_env() {
        use clap::CommandFactory;
        let command = WorkerConfig::command();
        let flags: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        assert_eq!(flags, ENV_VARS);
    }
}
