//! Shared helpers: starting clusters of the test worker program.

use std::time::{Duration, Instant};

/// The worker program built with these tests.
pub const WORKER: &str = env!("CARGO_BIN_EXE_dfut-test-worker");

/// A local cluster of `n` worker processes running the test functions.
pub fn cluster(n: usize) -> dfut::Runtime {
    cluster_with(n, |b| b)
}

/// Like [`cluster`], with the builder adjusted by `f`.
pub fn cluster_with(n: usize, f: impl FnOnce(dfut::Builder) -> dfut::Builder) -> dfut::Runtime {
    let b = dfut::Runtime::builder()
        .workers(n)
        .max_concurrent(2)
        .worker_program(WORKER)
        .heartbeat_timeout(Duration::from_millis(1500));
    f(b).start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// The node ids of the workers `rt` knows now.
pub fn worker_ids(rt: &dfut::Runtime) -> Vec<u64> {
    rt.client().workers().iter().map(|w| w.id).collect()
}

/// Waits until one of the workers whose ids were `before` has left the
/// cluster (a replacement may have joined meanwhile).
pub fn one_left(rt: &dfut::Runtime, before: &[u64]) -> bool {
    eventually(LIMIT, || {
        let now = worker_ids(rt);
        before.iter().any(|id| !now.contains(id))
    })
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A generous bound for any single wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The `dfut` tool, built next to the test binaries
/// (`<target>/debug/deps/it-*` → `<target>/debug/dfut`).
pub fn dfut_tool() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let tool = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join("dfut"))
        .expect("the test binary lives in <target>/<profile>/deps");
    assert!(
        tool.is_file(),
        "the `dfut` tool is missing at {}: build it with `cargo build -p dfut --features cli --bin dfut` \
         (a workspace build makes it)",
        tool.display()
    );
    tool
}

/// Sends `sig` (`-STOP`, `-CONT`, `-KILL`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Child processes killed (by process id) when dropped, so a failing test
/// leaves none behind.
#[derive(Default)]
pub struct Processes(pub Vec<std::process::Child>);

impl Processes {
    /// Starts `cmd` with its output discarded; returns its process id.
    pub fn start(&mut self, cmd: &mut std::process::Command) -> u32 {
        self.start_to(cmd, std::process::Stdio::null())
    }

    /// Starts `cmd` with its standard output going to `out` (a file, say)
    /// and its errors discarded; returns its process id.
    pub fn start_to(
        &mut self,
        cmd: &mut std::process::Command,
        out: impl Into<std::process::Stdio>,
    ) -> u32 {
        let child = cmd
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let pid = child.id();
        self.0.push(child);
        pid
    }

    /// Waits (up to `limit`) for every process started here to exit.
    pub fn wait_all(&mut self, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        for c in &mut self.0 {
            while c.try_wait().ok().flatten().is_none() {
                assert!(
                    std::time::Instant::now() < until,
                    "process {} did not exit",
                    c.id()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the process `pid` started here and reaps it.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.0.iter().position(|c| c.id() == pid) {
            let mut child = self.0.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A UDP port free on loopback just now.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh, empty directory for one test, named after it and this process.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dfut-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `dfut scheduler` on `port` with the credential file `pem`
/// (written by it if missing); returns its process id.
pub fn start_scheduler(procs: &mut Processes, port: u16, pem: &std::path::Path) -> u32 {
    procs.start(std::process::Command::new(dfut_tool()).args([
        "scheduler",
        "--port",
        &port.to_string(),
        "--credential-file",
        &pem.display().to_string(),
    ]))
}

/// The test worker program as a worker of two slots joining the scheduler
/// at `scheduler` with the credential file `pem`.
pub fn worker_command(
    scheduler: std::net::SocketAddr,
    pem: &std::path::Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(WORKER);
    cmd.env("DFUT_ROLE", "worker")
        .env("DFUT_SCHEDULER", scheduler.to_string())
        .env("DFUT_CREDENTIAL_FILE", pem)
        .env("DFUT_MAX_CONCURRENT", "2");
    cmd
}

/// Runs `cmd`, which must succeed, and parses its standard output as JSON.
pub fn json_output(cmd: &mut std::process::Command) -> serde_json::Value {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{cmd:?} printed no JSON: {e}"))
}

/// Resident memory of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// Held by the tests that load the machine on purpose (floods, the
/// hostile member), so that they do not run at the same time and starve
/// each other's handshakes on a 2-core machine.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}
