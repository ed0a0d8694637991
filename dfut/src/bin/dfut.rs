//! The `dfut` tool: run a standalone scheduler, print a cluster's status,
//! make a cluster credential.
//!
//! Workers are not started by this tool: they run inside your own binary
//! (which holds your remote functions) with `dfut::worker::run` or
//! `DFUT_ROLE=worker`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use dfut::ClusterCredential;
use dfut::scheduler::{ClusterStatus, ObjectListing, ObjectState, SchedulerConfig};

#[derive(Parser)]
#[command(name = "dfut", version, about = "Distributed futures: cluster tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    },
    /// Print the live workers and task counts of a cluster.
    Status {
        /// The scheduler's address.
        #[arg(long, env = "DFUT_SCHEDULER", default_value = "127.0.0.1:50051")]
        scheduler: SocketAddr,
        /// Cluster credential file.
        #[arg(long, env = "DFUT_CREDENTIAL_FILE", default_value = "dfut-cluster.pem")]
        credential_file: PathBuf,
    },
    /// List the largest objects held in a cluster: owner, size, state,
    /// holder and the references its owner holds.
    Objects {
        /// The scheduler's address.
        #[arg(long, env = "DFUT_SCHEDULER", default_value = "127.0.0.1:50051")]
        scheduler: SocketAddr,
        /// Cluster credential file.
        #[arg(long, env = "DFUT_CREDENTIAL_FILE", default_value = "dfut-cluster.pem")]
        credential_file: PathBuf,
        /// How many to list (each worker lists at most 1,000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON (one array of objects) instead of a table.
        #[arg(long)]
        json: bool,
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
            let rt = runtime()?;
            let handle = rt.block_on(async { dfut::scheduler::serve(config, &credential) })?;
            println!("scheduler listening on {}", handle.addr());
            rt.block_on(std::future::pending::<()>());
            Ok(())
        }
        Command::Status {
            scheduler,
            credential_file,
        } => {
            let credential = ClusterCredential::from_file(&credential_file)?;
            let status =
                runtime()?.block_on(dfut::scheduler::query_status(scheduler, &credential))?;
            print!("{}", render(scheduler, &status));
            Ok(())
        }
        Command::Objects {
            scheduler,
            credential_file,
            limit,
            json,
        } => {
            let credential = ClusterCredential::from_file(&credential_file)?;
            let objects = runtime()?.block_on(dfut::scheduler::query_objects(
                scheduler,
                &credential,
                limit,
            ))?;
            if json {
                println!("{}", objects_json(&objects));
            } else {
                print!("{}", render_objects(&objects));
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

fn state_name(state: ObjectState) -> &'static str {
    match state {
        ObjectState::Heap => "heap",
        ObjectState::Shared => "shm",
        ObjectState::Spilled => "spilled",
        ObjectState::Computing => "computing",
        ObjectState::Failed => "failed",
        _ => "other",
    }
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
            state_name(o.state),
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
                "state": state_name(o.state),
                "holder": o.holder,
                "refs": o.refs,
                "function": o.function,
            })
        })
        .collect()
}
