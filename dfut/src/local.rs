//! Workers of an embedded local cluster: child processes re-executed from a
//! program, or workers on threads of this process.
//!
//! A child learns the cluster credential from its standard input, never
//! from its command line or environment, and keeps reading that pipe: when
//! the driver exits, panics or is killed, the pipe closes and the child
//! exits too, so no worker outlives its driver.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use dfut_net::ClusterCredential;

use crate::runtime::ROLE_ENV;
use crate::worker::{self, WorkerConfig};
use crate::{Error, Result};

mod replace;
pub(crate) use replace::{Replacer, Workers};

/// Ends the credential on a child's standard input.
const CREDENTIAL_END: &str = ".";

/// How to start local workers.
pub(crate) struct Spec {
    pub scheduler: SocketAddr,
    pub credential: ClusterCredential,
    pub program: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub options: crate::WorkerOptions,
}

/// One worker started by this driver.
pub(crate) enum LocalWorker {
    Process(Child),
    InProcess {
        worker: worker::Worker,
        rt: Option<tokio::runtime::Runtime>,
    },
    /// A worker process that exited and was reaped, its place waiting for
    /// a replacement: no process id, nothing to stop.
    Dead,
}

impl LocalWorker {
    /// Starts a worker process.
    pub fn spawn(spec: &Spec) -> Result<Self> {
        let program = match &spec.program {
            Some(p) => p.clone(),
            None => {
                std::env::current_exe().map_err(Error::io("cannot find the current program"))?
            }
        };
        let mut cmd = Command::new(&program);
        cmd.env(ROLE_ENV, "worker")
            .env("DFUT_SCHEDULER", spec.scheduler.to_string())
            .env_remove("DFUT_CREDENTIAL")
            .env_remove("DFUT_CREDENTIAL_FILE")
            .env_remove("DFUT_WORKERS")
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for var in [
            "DFUT_MAX_CONCURRENT",
            "DFUT_HW_GENERATION",
            "DFUT_GPU",
            "DFUT_ADD_DELAY_MS",
            "DFUT_DELAY_SEED",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in spec.options.env() {
            cmd.env(k, v);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(Error::io(format!(
            "cannot start worker {}",
            program.display()
        )))?;
        let sent = child.stdin.as_mut().map(|stdin| {
            writeln!(
                stdin,
                "{}\n{CREDENTIAL_END}",
                spec.credential.to_pem().trim_end()
            )
            .and_then(|()| stdin.flush())
        });
        if !matches!(sent, Some(Ok(()))) {
            let _ = child.kill();
            return Err(Error::Process(
                "cannot hand the credential to a worker".into(),
            ));
        }
        Ok(LocalWorker::Process(child))
    }

    /// Starts a worker on threads of this process.
    pub fn in_process(spec: &Spec) -> Result<Self> {
        let mut config = WorkerConfig::new(spec.scheduler.to_string());
        config.max_concurrent = Some(2);
        spec.options.apply(&mut config);
        let rt = worker::runtime_for(&config)?;
        let worker = rt.block_on(worker::start(config, spec.credential.clone()))?;
        Ok(LocalWorker::InProcess {
            worker,
            rt: Some(rt),
        })
    }

    /// How the worker process ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self {
            LocalWorker::Process(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                _ => None,
            },
            LocalWorker::InProcess { .. } | LocalWorker::Dead => None,
        }
    }

    /// Whether this worker runs on threads of this process.
    pub fn is_in_process(&self) -> bool {
        matches!(self, LocalWorker::InProcess { .. })
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            LocalWorker::Process(c) => Some(c.id()),
            LocalWorker::InProcess { .. } | LocalWorker::Dead => None,
        }
    }

    /// Asks a worker process to exit (its standard input closes), so it
    /// removes its shared memory itself; see [`LocalWorker::stop`].
    pub fn ask_to_exit(&mut self) {
        if let LocalWorker::Process(child) = self {
            drop(child.stdin.take());
        }
    }

    /// Waits until `deadline` for a worker asked to exit, then kills it.
    pub fn stop(&mut self, deadline: std::time::Instant) {
        if let LocalWorker::Process(child) = self {
            while std::time::Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let _ = self.kill();
    }

    /// Stops the worker at once.
    pub fn kill(&mut self) -> Result<()> {
        match self {
            LocalWorker::Process(child) => {
                let killed = child.kill();
                let _ = child.wait();
                // It left its shared memory behind: remove it now.
                crate::shm::sweep_all();
                killed.map_err(Error::io("cannot kill worker"))
            }
            LocalWorker::InProcess { worker, rt } => {
                worker.shutdown();
                if let Some(rt) = rt.take() {
                    rt.shutdown_background();
                }
                Ok(())
            }
            LocalWorker::Dead => Ok(()),
        }
    }
}

impl Drop for LocalWorker {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The body of a worker process started by [`LocalWorker::spawn`]: reads
/// the credential from standard input, exits when standard input closes,
/// and serves tasks meanwhile. Never returns.
pub(crate) fn worker_main() -> ! {
    crate::worker::init_worker_tracing();
    let code = match serve_as_child() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dfut worker: {e}");
            1
        }
    };
    crate::shm::remove_own();
    std::process::exit(code)
}

fn serve_as_child() -> Result<()> {
    let config = WorkerConfig::from_env()?;
    if config.credential_file.is_some() || std::env::var_os("DFUT_CREDENTIAL").is_some() {
        // Started by hand (`DFUT_ROLE=worker`), not by a local cluster.
        return worker::run(config);
    }
    let stdin = std::io::stdin();
    let mut pem = String::new();
    for line in stdin.lock().lines() {
        let line = line.map_err(Error::io("reading the credential"))?;
        if line == CREDENTIAL_END {
            break;
        }
        pem.push_str(&line);
        pem.push('\n');
    }
    let credential = ClusterCredential::from_pem(&pem)?;
    std::thread::Builder::new()
        .name("dfut-parent-watch".into())
        .spawn(|| {
            // Nothing more is written; end of file means the driver is gone.
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            crate::shm::remove_own();
            std::process::exit(0);
        })
        .map_err(Error::io("cannot watch the driver"))?;
    // Its terminal is the driver's, which prints what it forwards.
    worker::run_with(config, credential, false)
}
