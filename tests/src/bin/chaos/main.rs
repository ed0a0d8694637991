//! The fault suite: a real scheduler, real worker processes and a real
//! driver process, with faults injected by process id (kill, stop,
//! continue) and on the wire (a seeded UDP relay that drops, delays and
//! reorders packets, or cuts a link).
//!
//! `dfut-chaos [--tasks N] [--seed S] [SCENARIO...]` runs the scenarios
//! (all by default) and prints one line per scenario and a summary; it
//! exits non-zero if any pass criterion fails. Scenarios: `kill`,
//! `kill-noretry`, `pause`, `partition`, `driver-pause`,
//! `scheduler-restart`, `owner-kill`, `lossy`. Every wait is bounded.
//!
//! `dfut-chaos drive ...` is the driver it starts (see [`drive`]).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test tool: a panic is its failure report

mod drive;
mod relay;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dfut::ClusterCredential;
use rand::{Rng, SeedableRng};
use relay::{Impairment, Relay};

/// Bound on any one wait of the suite.
const PATIENCE: Duration = Duration::from_secs(120);

const SCENARIOS: [&str; 8] = [
    "kill",
    "kill-noretry",
    "pause",
    "partition",
    "driver-pause",
    "scheduler-restart",
    "owner-kill",
    "lossy",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("drive") {
        std::process::exit(drive::main(&args[1..]));
    }
    let mut tasks = 10_000u64;
    let mut seed = 7u64;
    let mut chosen = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tasks" => tasks = it.next().and_then(|v| v.parse().ok()).unwrap_or(tasks),
            "--seed" => seed = it.next().and_then(|v| v.parse().ok()).unwrap_or(seed),
            s if SCENARIOS.contains(&s) => chosen.push(s.to_owned()),
            other => {
                eprintln!("dfut-chaos: unknown argument `{other}`; scenarios: {SCENARIOS:?}");
                std::process::exit(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut total = Totals::default();
    let mut failed = Vec::new();
    for (i, name) in chosen.iter().enumerate() {
        let started = Instant::now();
        let outcome = runtime.block_on(run(name, tasks, seed + i as u64));
        match outcome {
            Ok(report) => {
                println!(
                    "{name}: ok in {:.1} s: {} faults, {} tasks, {} values checked, {} lost{}",
                    started.elapsed().as_secs_f64(),
                    report.faults,
                    report.result.tasks,
                    report.result.checked,
                    report.result.lost,
                    report.notes
                );
                total.add(&report);
            }
            Err(why) => {
                println!("{name}: FAILED: {why}");
                failed.push(name.clone());
            }
        }
    }
    println!(
        "chaos: {} scenarios, {} failed; faults injected {}, tasks run {}, values checked {}, \
         wrong {}, lost {} (and {} WorkerLost where retries were off, as allowed)",
        chosen.len(),
        failed.len(),
        total.faults,
        total.tasks,
        total.checked,
        total.wrong,
        total.lost,
        total.lost_allowed,
    );
    std::process::exit(i32::from(!failed.is_empty()));
}

#[derive(Default)]
struct Totals {
    faults: u64,
    tasks: u64,
    checked: u64,
    wrong: u64,
    /// Values lost where retries were on.
    lost: u64,
    /// `WorkerLost` errors where retries were off (allowed there).
    lost_allowed: u64,
}

impl Totals {
    fn add(&mut self, r: &Report) {
        self.faults += r.faults;
        self.tasks += r.result.tasks;
        self.checked += r.result.checked;
        self.wrong += r.result.wrong;
        if r.lost_allowed {
            self.lost_allowed += r.result.lost;
        } else {
            self.lost += r.result.lost;
        }
    }
}

/// What one scenario did.
struct Report {
    faults: u64,
    result: drive::Outcome,
    /// Heal times and the like, for the summary line.
    notes: String,
    /// `WorkerLost` results are allowed (retries off).
    lost_allowed: bool,
}

/// Runs one scenario on a fresh cluster.
async fn run(name: &str, tasks: u64, seed: u64) -> Result<Report, String> {
    let lossy = name == "lossy";
    let impairment = lossy.then_some(Impairment {
        loss: 0.05,
        max_delay: Duration::from_millis(2),
    });
    let mut c = Cluster::start(impairment, seed, name == "partition").await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let job =
        |retries: &str| ["--tasks", &tasks.to_string(), "--retries", retries].map(str::to_owned);
    let (faults, result, notes) = match name {
        "kill" | "kill-noretry" => {
            let retries = if name == "kill" { 10 } else { 0 };
            let mut d = c.driver(&job(&retries.to_string()), seed)?;
            d.wait_for("submitted")?;
            let mut kills = 0u64;
            let (mut drops, mut joins) = (Vec::new(), Vec::new());
            // The first kill after 1 s, then one every 2 s.
            let mut pause = Duration::from_secs(1);
            while !d.finished() {
                tokio::time::sleep(pause).await;
                pause = Duration::from_secs(2);
                if d.finished() {
                    break;
                }
                let victim = c.workers[rng.random_range(0..c.workers.len())];
                c.kill(victim);
                kills += 1;
                let t = Instant::now();
                let fresh = c.start_worker().await?;
                c.until(
                    |s| s.workers.iter().any(|w| w.info.pid == fresh),
                    "the replacement registers",
                )
                .await?;
                joins.push(t.elapsed());
                c.until(
                    |s| !s.workers.iter().any(|w| w.info.pid == victim),
                    "the killed worker is dropped",
                )
                .await?;
                drops.push(t.elapsed());
            }
            if kills == 0 {
                return Err("the job ended before the first kill; use more --tasks".into());
            }
            let r = d.result()?;
            let allowed_lost = retries == 0;
            r.check(allowed_lost)?;
            (
                kills,
                r,
                format!(
                    "; killed worker dropped after {}, replacement registered after {}",
                    spread(&drops),
                    spread(&joins)
                ),
            )
        }
        "pause" => {
            let mut d = c.driver(&job("10"), seed)?;
            d.wait_for("submitted")?;
            d.still_running()?;
            let pid = c.workers[0];
            let heal = c
                .drop_and_heal(pid, || signal(pid, "-STOP"), || signal(pid, "-CONT"))
                .await?;
            let r = d.result()?;
            r.check(false)?;
            let note = format!("; back in the cluster {heal:.2} s after SIGCONT");
            (1, r, note)
        }
        "partition" => {
            let mut d = c.driver(&job("10"), seed)?;
            d.wait_for("submitted")?;
            d.still_running()?;
            let cut = c.cut_worker.as_ref().ok_or("no cut relay")?;
            let pid = c.workers[0];
            let heal = c
                .drop_and_heal(pid, || cut.set_cut(true), || cut.set_cut(false))
                .await?;
            let r = d.result()?;
            r.check(false)?;
            let note = format!("; back in the cluster {heal:.2} s after the link healed");
            (1, r, note)
        }
        "driver-pause" => {
            let mut d = c.driver(&job("10"), seed)?;
            d.wait_for("submitted")?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            d.still_running()?;
            signal(d.pid(), "-STOP");
            tokio::time::sleep(Duration::from_secs(15)).await;
            signal(d.pid(), "-CONT");
            let t = Instant::now();
            let r = d.result()?;
            r.check(false)?;
            (
                1,
                r,
                format!(
                    "; the job finished {:.1} s after the driver continued",
                    t.elapsed().as_secs_f64()
                ),
            )
        }
        "scheduler-restart" => {
            // No retries: the restart itself must fail no task.
            let mut d = c.driver(&job("0"), seed)?;
            d.wait_for("submitted")?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            d.still_running()?;
            c.restart_scheduler().await?;
            let t = Instant::now();
            c.until(
                |s| s.workers.len() == 4,
                "the workers register with the new scheduler",
            )
            .await?;
            let heal = t.elapsed();
            let r = d.result()?;
            r.check(false)?;
            (
                1,
                r,
                format!(
                    "; membership rebuilt {:.2} s after the restart",
                    heal.as_secs_f64()
                ),
            )
        }
        "owner-kill" => {
            let mut d = c.driver(&["--hold".to_owned(), "200".to_owned()], seed)?;
            d.wait_for("holding")?;
            c.until(|s| objects(s) >= 200, "the owner's objects are stored")
                .await?;
            let t = Instant::now();
            c.kill_driver(&mut d);
            c.until(|s| objects(s) == 0, "the dead owner's objects are freed")
                .await?;
            let freed = t.elapsed();
            // Its connections idle out (10 s), then the grace period (30 s)
            // runs; 10 s more is slack for a loaded machine.
            if freed > Duration::from_secs(50) {
                return Err(format!("freed only {freed:?} after the kill"));
            }
            let r = drive::Outcome {
                tasks: 200,
                checked: 200,
                ..Default::default()
            };
            (
                1,
                r,
                format!(
                    "; its 200 objects freed on every worker {:.1} s after the kill (idle timeout 10 s + grace 30 s)",
                    freed.as_secs_f64()
                ),
            )
        }
        "lossy" => {
            let mut d = c.driver(&job("0"), seed)?;
            d.wait_for("submitted")?;
            d.still_running()?;
            let ids: Vec<u64> = c
                .status()
                .await?
                .workers
                .iter()
                .map(|w| w.info.id)
                .collect();
            let mut evicted = false;
            while !d.finished() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(s) = c.status().await {
                    evicted |= ids
                        .iter()
                        .any(|id| !s.workers.iter().any(|w| w.info.id == *id));
                }
            }
            let r = d.result()?;
            r.check(false)?;
            if evicted {
                return Err("a worker was evicted at 5 % loss".into());
            }
            let dropped: u64 = c.relays.iter().map(Relay::dropped).sum();
            (
                dropped,
                r,
                format!("; {dropped} packets dropped, no eviction"),
            )
        }
        other => return Err(format!("unknown scenario {other}")),
    };
    drop(c);
    Ok(Report {
        faults,
        result,
        notes,
        lost_allowed: name == "kill-noretry",
    })
}

/// Min–max of some durations, in seconds.
fn spread(d: &[Duration]) -> String {
    let secs: Vec<f64> = d.iter().map(Duration::as_secs_f64).collect();
    let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = secs.iter().copied().fold(0.0, f64::max);
    if secs.is_empty() {
        "no kill".into()
    } else {
        format!("{min:.2}-{max:.2} s")
    }
}

fn objects(s: &dfut::scheduler::ClusterStatus) -> u64 {
    s.workers.iter().map(|w| w.load.objects).sum()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Next to this program: the `dfut` tool and the test worker.
fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("this program's path");
    exe.parent().map(|d| d.join(name)).expect("a directory")
}

fn free_port() -> Result<u16, String> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A scheduler, four workers and the relays in front of them.
struct Cluster {
    dir: PathBuf,
    pem: PathBuf,
    credential: ClusterCredential,
    port: u16,
    scheduler: u32,
    /// What drivers use to reach the scheduler.
    sched_addr: SocketAddr,
    workers: Vec<u32>,
    procs: HashMap<u32, Child>,
    impairment: Option<Impairment>,
    relays: Vec<Relay>,
    /// The relay between worker 0 and the scheduler (partition scenario).
    cut_worker: Option<Relay>,
    seed: u64,
}

impl Cluster {
    async fn start(impairment: Option<Impairment>, seed: u64, cut: bool) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("dfut-chaos-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let pem = dir.join("cluster.pem");
        let port = free_port()?;
        let mut c = Self {
            dir,
            credential: ClusterCredential::generate().map_err(|e| e.to_string())?,
            pem,
            port,
            scheduler: 0,
            sched_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            workers: Vec::new(),
            procs: HashMap::new(),
            impairment,
            relays: Vec::new(),
            cut_worker: None,
            seed,
        };
        c.credential
            .save(&c.pem, false)
            .map_err(|e| e.to_string())?;
        c.scheduler = c.spawn_scheduler()?;
        if let Some(imp) = impairment {
            let r = Relay::start(c.sched_addr, imp, seed ^ 0x5c).await;
            c.sched_addr = r.addr;
            c.relays.push(r);
        }
        c.until(|_| true, "the scheduler answers").await?;
        if cut {
            let r = Relay::start(
                c.sched_addr,
                Impairment {
                    loss: 0.0,
                    max_delay: Duration::ZERO,
                },
                seed,
            )
            .await;
            let via = r.addr;
            c.cut_worker = Some(r);
            c.spawn_worker(Some(via)).await?;
        }
        while c.workers.len() < 4 {
            c.start_worker().await?;
        }
        c.until(|s| s.workers.len() == 4, "four workers register")
            .await?;
        Ok(c)
    }

    fn spawn_scheduler(&mut self) -> Result<u32, String> {
        let child = Command::new(sibling("dfut"))
            .args([
                "scheduler",
                "--port",
                &self.port.to_string(),
                "--credential-file",
            ])
            .arg(&self.pem)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the scheduler: {e}"))?;
        let pid = child.id();
        self.procs.insert(pid, child);
        Ok(pid)
    }

    /// Starts a worker; returns its process id.
    async fn start_worker(&mut self) -> Result<u32, String> {
        self.spawn_worker(None).await
    }

    /// Starts a worker (behind a relay on lossy runs); `scheduler` overrides
    /// the scheduler address it uses.
    async fn spawn_worker(&mut self, scheduler: Option<SocketAddr>) -> Result<u32, String> {
        let mut cmd = Command::new(sibling("dfut-test-worker"));
        cmd.env("DFUT_ROLE", "worker")
            .env(
                "DFUT_SCHEDULER",
                scheduler.unwrap_or(self.sched_addr).to_string(),
            )
            .env("DFUT_CREDENTIAL_FILE", &self.pem)
            .env("DFUT_MAX_CONCURRENT", "2");
        if let Some(imp) = self.impairment {
            // The relay must know the worker's port before it starts.
            let port = free_port()?;
            cmd.env("DFUT_WORKER_PORT", port.to_string());
            let r = Relay::start(
                SocketAddr::from(([127, 0, 0, 1], port)),
                imp,
                self.seed ^ u64::from(port),
            )
            .await;
            cmd.env("DFUT_ADVERTISE", r.addr.to_string());
            self.relays.push(r);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let pid = child.id();
        self.procs.insert(pid, child);
        self.workers.push(pid);
        Ok(pid)
    }

    /// Kills process `pid` (SIGKILL by pid) and reaps it.
    fn kill(&mut self, pid: u32) {
        if let Some(mut child) = self.procs.remove(&pid) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.workers.retain(|p| *p != pid);
    }

    fn kill_driver(&mut self, d: &mut Driver) {
        let _ = d.child.kill();
        let _ = d.child.wait();
    }

    async fn restart_scheduler(&mut self) -> Result<(), String> {
        let old = self.scheduler;
        if let Some(mut child) = self.procs.remove(&old) {
            let _ = child.kill();
            let _ = child.wait();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.scheduler = self.spawn_scheduler()?;
        Ok(())
    }

    async fn status(&self) -> Result<dfut::scheduler::ClusterStatus, String> {
        dfut::scheduler::query_status(self.sched_addr, &self.credential)
            .await
            .map_err(|e| e.to_string())
    }

    /// Polls the scheduler every 100 ms until `cond` holds, at most
    /// [`PATIENCE`].
    async fn until(
        &self,
        cond: impl Fn(&dfut::scheduler::ClusterStatus) -> bool,
        what: &str,
    ) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), self.status()).await
                && cond(&s)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("{what}: not within {PATIENCE:?}"))
    }

    /// Applies `fault` to worker `pid` until the scheduler drops it, then
    /// `heal`; returns the seconds until it is back in the cluster.
    async fn drop_and_heal(
        &self,
        pid: u32,
        fault: impl FnOnce(),
        heal: impl FnOnce(),
    ) -> Result<f64, String> {
        fault();
        let listed =
            |s: &dfut::scheduler::ClusterStatus| s.workers.iter().any(|w| w.info.pid == pid);
        self.until(|s| !listed(s), "the worker is dropped").await?;
        heal();
        let t = Instant::now();
        self.until(listed, "the worker comes back").await?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Starts a driver process joined to this cluster.
    fn driver(&self, args: &[String], seed: u64) -> Result<Driver, String> {
        let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .arg("drive")
            .args(args)
            .args(["--seed", &seed.to_string()])
            .env("DFUT_SCHEDULER", self.sched_addr.to_string())
            .env("DFUT_CREDENTIAL_FILE", &self.pem)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the driver: {e}"))?;
        let out = child.stdout.take().ok_or("no driver stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Driver {
            child,
            lines,
            result: None,
        })
    }
}

impl Drop for Cluster {
    /// Kills (by process id) every process of the cluster, whatever way
    /// the scenario ended.
    fn drop(&mut self) {
        for (_, mut child) in self.procs.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running driver process and its output; killed when dropped.
struct Driver {
    child: Child,
    lines: mpsc::Receiver<String>,
    result: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the line `word`.
    fn wait_for(&mut self, word: &str) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let found = l.starts_with(word);
                    if l.starts_with("result") {
                        self.result = Some(l);
                    }
                    if found {
                        return Ok(());
                    }
                }
                Err(_) => return Err(format!("the driver never said `{word}`")),
            }
        }
    }

    /// Fails if the job already ended: a fault injected now would prove
    /// nothing (run with more `--tasks`).
    fn still_running(&mut self) -> Result<(), String> {
        if self.finished() {
            Err("the job ended before the fault was injected; use more --tasks".into())
        } else {
            Ok(())
        }
    }

    /// Whether the driver printed its result (without waiting).
    fn finished(&mut self) -> bool {
        while let Ok(l) = self.lines.try_recv() {
            if l.starts_with("result") {
                self.result = Some(l);
            }
        }
        self.result.is_some() || matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits (bounded) for the driver's result line and its exit.
    fn result(&mut self) -> Result<drive::Outcome, String> {
        if self.result.is_none() {
            self.wait_for("result")?;
        }
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let line = self.result.clone().ok_or("the driver printed no result")?;
        drive::Outcome::parse(&line)
    }
}
