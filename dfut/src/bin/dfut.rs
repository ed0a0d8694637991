//! The `dfut` tool: run a standalone scheduler; print a cluster's status,
//! its tasks and objects, and a timeline of what ran where; make a
//! cluster credential.
//!
//! Workers are not started by this tool: they run inside your own binary
//! (which holds your remote functions) with `dfut::worker::run` or
//! `DFUT_ROLE=worker`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use dfut::ClusterCredential;
use dfut::inspect::{
    self, ObjectFilter, ObjectListing, ObjectState, TaskFilter, TaskListing, TaskState,
};
use dfut::scheduler::{ClusterStatus, SchedulerConfig};

#[derive(Parser)]
#[command(name = "dfut", version, about = "Distributed futures: cluster tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a cluster is and how to join it.
#[derive(clap::Args)]
struct ClusterArgs {
    /// The scheduler's address.
    #[arg(long, env = "DFUT_SCHEDULER", default_value = "127.0.0.1:50051")]
    scheduler: SocketAddr,
    /// Cluster credential file.
    #[arg(long, env = "DFUT_CREDENTIAL_FILE", default_value = "dfut-cluster.pem")]
    credential_file: PathBuf,
}

impl ClusterArgs {
    fn credential(&self) -> dfut::Result<ClusterCredential> {
        Ok(ClusterCredential::from_file(&self.credential_file)?)
    }
}

fn parse_task_state(name: &str) -> Result<TaskState, String> {
    inspect::task_state_named(name)
        .ok_or_else(|| "valid: backlog, queued, running, finished, failed".to_owned())
}

fn parse_object_state(name: &str) -> Result<ObjectState, String> {
    inspect::object_state_named(name)
        .ok_or_else(|| "valid: heap, shm, spilled, computing, failed".to_owned())
}

fn parse_hex(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// Run a scheduler until interrupted.
    Scheduler {
        /// UDP port to listen on.
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// Interface to listen on (0.0.0.0 for every interface).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Placement policy announced to clients.
        #[arg(long, env = "DFUT_SCHEDULER_MODE", default_value = "default")]
        mode: String,
        /// Cluster credential file; created if it does not exist.
        #[arg(long, env = "DFUT_CREDENTIAL_FILE", default_value = "dfut-cluster.pem")]
        credential_file: PathBuf,
        /// Milliseconds without a heartbeat before a worker is dropped.
        #[arg(long, default_value_t = 2000)]
        heartbeat_timeout_ms: u64,
        /// Serve the dashboard (`/`) and Prometheus metrics (`/metrics`)
        /// over HTTP on this address (keep it local or private: HTTP is
        /// not encrypted).
        #[arg(long, env = "DFUT_HTTP")]
        http: Option<SocketAddr>,
        /// The token the web pages ask for (a random one by default).
        #[arg(long, env = "DFUT_HTTP_TOKEN", hide_env_values = true)]
        http_token: Option<String>,
    },
    /// Print the live workers and task counts of a cluster.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List the largest objects held in a cluster: owner, size, state,
    /// holder and the references its owner holds.
    Objects {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// How many to list (each worker lists at most 1,000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only objects in this state: heap, shm, spilled, computing, failed.
        #[arg(long, value_parser = parse_object_state)]
        state: Option<ObjectState>,
        /// Only objects whose function name contains this.
        #[arg(long)]
        function: Option<String>,
        /// Only objects held by this worker (its address).
        #[arg(long)]
        holder: Option<String>,
        /// Only objects of this owner (its node id, in hex as listed).
        #[arg(long, value_parser = parse_hex)]
        owner: Option<u64>,
        /// Only objects of at least this many bytes.
        #[arg(long, default_value_t = 0)]
        min_bytes: u64,
        /// Print JSON (one array of objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a cluster's tasks: running and queued at workers, waiting in
    /// owners' backlogs, and each worker's most recent ended ones.
    Tasks {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// How many to list.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only tasks in this state: backlog, queued, running, finished,
        /// failed.
        #[arg(long, value_parser = parse_task_state)]
        state: Option<TaskState>,
        /// Only tasks whose function name contains this.
        #[arg(long)]
        function: Option<String>,
        /// Only tasks sent to this worker (its address).
        #[arg(long)]
        worker: Option<String>,
        /// Only tasks of this owner (its node id, in hex as listed).
        #[arg(long, value_parser = parse_hex)]
        owner: Option<u64>,
        /// Print JSON (one array of tasks) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the last tasks of every worker as a timeline: Chrome trace
    /// events (open in ui.perfetto.dev or chrome://tracing), or a picture.
    Timeline {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Where to write the trace (JSON).
        #[arg(long, default_value = "dfut-timeline.json")]
        out: PathBuf,
        /// Also draw it as an SVG picture here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// How many of each worker's most recent tasks to draw.
        #[arg(long, default_value_t = 2000)]
        limit: u32,
    },
    /// Write a new cluster credential to a file (mode 0600).
    Credential {
        /// Where to write it.
        #[arg(long, default_value = "dfut-cluster.pem")]
        out: PathBuf,
        /// Replace an existing file (every process of the cluster then
        /// needs the new one).
        #[arg(long)]
        force: bool,
    },
}

fn main() {
    dfut::init_tracing();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("dfut: {e}");
        std::process::exit(1);
    }
}

fn runtime() -> dfut::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| dfut::Error::Io {
            context: "cannot start the runtime".into(),
            source: dfut::Cause::new(e),
        })
}

/// Writes a new credential to `path` (mode 0600, never following a
/// symlink); an existing file is replaced only with `force`.
fn write_credential(path: &Path, force: bool) -> dfut::Result<ClusterCredential> {
    let credential = ClusterCredential::generate()?;
    credential.save(path, force)?;
    Ok(credential)
}

fn run(cli: Cli) -> dfut::Result<()> {
    match cli.command {
        Command::Scheduler {
            port,
            host,
            mode,
            credential_file,
            heartbeat_timeout_ms,
            http,
            http_token,
        } => {
            dfut::scheduler::policy_by_name(&mode)?;
            // Create it unless it exists, in one step: no window for a
            // planted file between a check and the write.
            let fresh = ClusterCredential::generate()?;
            let credential = match fresh.save(&credential_file, false) {
                Ok(()) => {
                    eprintln!(
                        "wrote a new cluster credential to {}",
                        credential_file.display()
                    );
                    fresh
                }
                Err(e) if ClusterCredential::exists_error(&e) => {
                    ClusterCredential::from_file(&credential_file)?
                }
                Err(e) => return Err(e.into()),
            };
            let addr: SocketAddr = format!("{host}:{port}").parse().map_err(|e| {
                dfut::Error::Config(dfut::Cause::context(format!("{host}:{port}"), e))
            })?;
            let mut config = SchedulerConfig::new(addr);
            config.mode = mode;
            config.heartbeat_timeout = Duration::from_millis(heartbeat_timeout_ms);
            (config.http, config.http_token) = (http, http_token);
            let rt = runtime()?;
            let handle = rt.block_on(async { dfut::scheduler::serve(config, &credential) })?;
            println!("scheduler listening on {}", handle.addr());
            if let (Some(url), Some(addr)) = (handle.dashboard_url(), handle.http_addr()) {
                println!("dashboard on {url}");
                println!("metrics on http://{addr}/metrics (with `Authorization: Bearer <token>`)");
            }
            rt.block_on(std::future::pending::<()>());
            Ok(())
        }
        Command::Status { cluster } => {
            let credential = cluster.credential()?;
            let query = dfut::scheduler::query_status(cluster.scheduler, &credential);
            let status = runtime()?.block_on(query)?;
            print!("{}", render(cluster.scheduler, &status));
            Ok(())
        }
        Command::Objects {
            cluster,
            limit,
            state,
            function,
            holder,
            owner,
            min_bytes,
            json,
        } => {
            let mut filter = ObjectFilter::new().min_bytes(min_bytes);
            (filter.state, filter.function) = (state, function);
            (filter.holder, filter.owner) = (holder, owner);
            // Ask for every object each worker lists when filtering, so
            // the filter does not run on a cut list.
            let asked = if filter == ObjectFilter::default() {
                limit
            } else {
                u32::MAX
            };
            let credential = cluster.credential()?;
            let query = dfut::scheduler::query_objects(cluster.scheduler, &credential, asked);
            let objects = runtime()?.block_on(query)?;
            let mut objects: Vec<ObjectListing> =
                filter.apply(&objects).into_iter().cloned().collect();
            objects.truncate(limit as usize);
            if json {
                println!("{}", objects_json(&objects));
            } else {
                print!("{}", render_objects(&objects));
            }
            Ok(())
        }
        Command::Tasks {
            cluster,
            limit,
            state,
            function,
            worker,
            owner,
            json,
        } => {
            let mut filter = TaskFilter::new();
            (filter.state, filter.function) = (state, function);
            (filter.worker, filter.owner) = (worker, owner);
            let credential = cluster.credential()?;
            let query =
                dfut::scheduler::query_tasks(cluster.scheduler, &credential, &filter, limit);
            let report = runtime()?.block_on(query)?;
            let mut tasks = report.tasks;
            tasks.truncate(limit as usize);
            if json {
                println!("{}", tasks_json(&tasks));
            } else {
                print!("{}", render_tasks(&tasks));
            }
            Ok(())
        }
        Command::Timeline {
            cluster,
            out,
            svg,
            limit,
        } => {
            let credential = cluster.credential()?;
            let all = TaskFilter::new();
            let query = dfut::scheduler::query_tasks(cluster.scheduler, &credential, &all, limit);
            let report = runtime()?.block_on(query)?;
            write_file(&out, &inspect::timeline::chrome_trace(&report))?;
            println!(
                "wrote {} tasks and {} fetches of {} workers to {}",
                report.tasks.len(),
                report.fetches.len(),
                report.workers.len(),
                out.display()
            );
            if let Some(path) = svg {
                write_file(&path, &inspect::timeline::svg(&report))?;
                println!("drew them in {}", path.display());
            }
            Ok(())
        }
        Command::Credential { out, force } => {
            write_credential(&out, force)?;
            println!("wrote a new cluster credential to {}", out.display());
            Ok(())
        }
    }
}

fn render(scheduler: SocketAddr, status: &ClusterStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scheduler {scheduler}  policy {}  workers {}",
        status.mode,
        status.workers.len()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>5} {:>3} {:>3} {:>7} {:>6} {:>7} {:>10} {:>10} {:>10} {:>7} {:>8} {:>6}",
        "WORKER",
        "PID",
        "SLOTS",
        "GEN",
        "GPU",
        "RUNNING",
        "QUEUED",
        "OBJECTS",
        "HEAP",
        "SHM",
        "SPILLED",
        "(OBJS)",
        "DONE",
        "FAILED"
    );
    let (mut queued, mut running, mut done, mut failed) = (0u64, 0u64, 0u64, 0u64);
    for w in &status.workers {
        let (i, l) = (&w.info, &w.load);
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>5} {:>3} {:>3} {:>7} {:>6} {:>7} {:>10} {:>10} {:>10} {:>7} {:>8} {:>6}",
            i.addr,
            i.pid,
            i.max_concurrent,
            i.hw_generation,
            if i.gpu { "yes" } else { "no" },
            l.running,
            l.queued,
            l.objects,
            l.object_bytes
                .saturating_sub(l.shared_bytes)
                .saturating_sub(l.spilled_bytes),
            l.shared_bytes,
            l.spilled_bytes,
            l.spilled_objects,
            l.tasks_done,
            l.tasks_failed
        );
        queued += u64::from(l.queued);
        running += u64::from(l.running);
        done += l.tasks_done;
        failed += l.tasks_failed;
    }
    for w in &status.workers {
        let _ = writeln!(
            out,
            "{}: node {:x}, {} CPUs, {}",
            w.info.addr,
            w.info.id,
            w.info.max_concurrent,
            dfut::scheduler::describe_resources(&w.info)
        );
    }
    for w in &status.workers {
        if w.suspect {
            let _ = writeln!(out, "{}: suspect (heartbeats late)", w.info.addr);
        }
        if w.load.unhealthy {
            let _ = writeln!(
                out,
                "{}: unhealthy ({} tasks still running past their deadlines)",
                w.info.addr, w.load.abandoned
            );
        }
    }
    let _ = writeln!(
        out,
        "tasks: queued {queued}, running {running}, finished {done}, failed {failed}"
    );
    out
}

fn write_file(path: &Path, text: &str) -> dfut::Result<()> {
    std::fs::write(path, text).map_err(|e| dfut::Error::Io {
        context: format!("cannot write {}", path.display()),
        source: dfut::Cause::new(e),
    })
}

/// `us` (microseconds since the Unix epoch) as UTC time of day with
/// milliseconds; `-` for 0.
fn clock(us: u64) -> String {
    if us == 0 {
        return "-".to_owned();
    }
    let ms = us / 1000;
    let (h, m, s) = (ms / 3_600_000 % 24, ms / 60_000 % 60, ms / 1000 % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// Milliseconds from `from` to `to`, or `-` when either is unknown.
fn millis(from: u64, to: u64) -> String {
    if from == 0 || to == 0 {
        return "-".to_owned();
    }
    format!("{:.3}", to.saturating_sub(from) as f64 / 1000.0)
}

fn render_tasks(tasks: &[TaskListing]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<9} {:<22} {:<10} {:>12} {:>10} {:>10}  FUNCTION / ERROR",
        "TASK", "STATE", "WORKER", "RAN", "SUBMITTED", "WAIT MS", "RUN MS"
    );
    for t in tasks {
        let waited_from = if t.submitted_us != 0 {
            t.submitted_us
        } else {
            t.received_us
        };
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<22} {:<10} {:>12} {:>10} {:>10}  {}{}",
            t.id.to_string(),
            inspect::task_state_name(t.state),
            if t.worker.is_empty() { "-" } else { &t.worker },
            inspect::run_kind_name(t.kind),
            clock(t.submitted_us),
            millis(waited_from, t.started_us),
            millis(t.started_us, t.ended_us),
            t.function,
            if t.error.is_empty() {
                String::new()
            } else {
                format!(": {}", t.error)
            }
        );
    }
    let _ = writeln!(out, "{} tasks", tasks.len());
    out
}

fn tasks_json(tasks: &[TaskListing]) -> serde_json::Value {
    tasks
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id.to_string(),
                "owner": format!("{:x}", t.id.owner),
                "function": t.function,
                "state": inspect::task_state_name(t.state),
                "worker": t.worker,
                "ran": inspect::run_kind_name(t.kind),
                "submitted_us": t.submitted_us,
                "received_us": t.received_us,
                "started_us": t.started_us,
                "ended_us": t.ended_us,
                "error": t.error,
            })
        })
        .collect()
}

fn render_objects(objects: &[ObjectListing]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>16} {:>12} {:<9} {:<22} {:>4}  FUNCTION",
        "OBJECT", "OWNER", "BYTES", "STATE", "HOLDER", "REFS"
    );
    for o in objects {
        let refs = o.refs.map_or("?".to_owned(), |r| r.to_string());
        let _ = writeln!(
            out,
            "{:<24} {:>16x} {:>12} {:<9} {:<22} {:>4}  {}",
            o.id.to_string(),
            o.id.owner,
            o.bytes,
            inspect::object_state_name(o.state),
            o.holder,
            refs,
            o.function
        );
    }
    let total: u64 = objects.iter().map(|o| o.bytes).sum();
    let _ = writeln!(out, "{} objects, {total} bytes", objects.len());
    out
}

fn objects_json(objects: &[ObjectListing]) -> serde_json::Value {
    objects
        .iter()
        .map(|o| {
            serde_json::json!({
                "id": o.id.to_string(),
                "owner": format!("{:x}", o.id.owner),
                "bytes": o.bytes,
                "state": inspect::object_state_name(o.state),
                "holder": o.holder,
                "refs": o.refs,
                "function": o.function,
            })
        })
        .collect()
}
