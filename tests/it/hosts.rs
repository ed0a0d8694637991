//! A real cluster runs across hosts: the README's manual flow (the `dfut`
//! scheduler, two workers, a driver, `dfut status`) with every process in a
//! network namespace of its own, each with its own address. The namespaces
//! are joined by veth pairs into a bridge that lives in a namespace of its
//! own, so no test address ever appears in the host's tables.
//!
//! Needs root and iproute2 (`ip`); where namespaces cannot be made the test
//! fails, unless `DFUT_SKIP_NETNS=1` is set, when it says why and passes.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{LIMIT, WORKER, eventually};

/// The scheduler's address inside its namespace.
const SCHEDULER: &str = "10.77.0.1:50051";

/// Each host of the test cluster: its role and address (the bridge
/// namespace has no address).
const HOSTS: [(&str, &str); 5] = [
    ("sched", "10.77.0.1"),
    ("driver", "10.77.0.2"),
    ("w1", "10.77.0.3"),
    ("w2", "10.77.0.4"),
    ("status", "10.77.0.5"),
];

/// How long the driver may run before it is killed.
const DRIVER_LIMIT: Duration = Duration::from_secs(120);

/// Polls `child` until it exits or `limit` passes; `None` if it is still
/// running.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Runs `ip args`, bounded; its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let shown = format!("ip {}", args.join(" "));
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{shown}` did not start (is iproute2 installed?): {e}"))?;
    let Some(status) = wait_bounded(&mut child, Duration::from_secs(10)) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("`{shown}` did not finish within 10 s"));
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    }
    Err(format!("`{shown}` failed ({status}): {}", err.trim()))
}

/// Whether this process runs as root (namespaces need it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// One started process: its name (for logs) and the files its output goes to.
struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// The test cluster's namespaces and processes. Dropping it kills every
/// process it started (by its id) and deletes every namespace it made,
/// whether the test passed or not; on a failure it prints every log first.
struct Hosts {
    prefix: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    dir: PathBuf,
}

impl Hosts {
    fn new() -> Self {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("dfut-hosts-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self {
            prefix: format!("dfut{pid}"),
            namespaces: Vec::new(),
            procs: Vec::new(),
            dir,
        }
    }

    /// The namespace of `role`.
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Makes the namespace of `role` (remembered for deletion).
    fn add_ns(&mut self, role: &str) -> Result<String, String> {
        let ns = self.ns(role);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Makes the bridge namespace, or says why namespaces cannot be made here.
    fn bridge(&mut self) -> Result<String, String> {
        if !is_root() {
            return Err("not running as root".into());
        }
        self.add_ns("bridge")
    }

    /// Makes every host's namespace, wired into the bridge in `bridge`.
    fn wire(&mut self, bridge: &str) -> Result<(), String> {
        ip(&["-n", bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", bridge, "link", "set", "br0", "up"])?;
        for (i, (role, addr)) in HOSTS.iter().enumerate() {
            let ns = self.add_ns(role)?;
            let port = format!("v{i}");
            ip(&[
                "-n", bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", bridge, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", bridge, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Starts `program args` in the namespace of `role` with only the
    /// `DFUT_*` environment given here; its output goes to files.
    fn start(
        &mut self,
        name: &str,
        role: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        let stdout = self.dir.join(format!("{name}.stdout"));
        let stderr = self.dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role)])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("a log file"))
            .stderr(File::create(&stderr).expect("a log file"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DFUT_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        });
    }

    /// The process started as `name`.
    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Waits for the process `name` to exit, bounded by `limit`, and while
    /// it runs checks that every process in `needed` still does: if one
    /// has exited, or `limit` passes, `name` is killed and the result is
    /// an error saying why. Also what `name` wrote to stdout and stderr.
    fn finish(
        &mut self,
        name: &str,
        limit: Duration,
        needed: &[&str],
    ) -> (Result<ExitStatus, String>, String, String) {
        let start = Instant::now();
        let result = loop {
            if let Ok(Some(status)) = self.proc(name).child.try_wait() {
                break Ok(status);
            }
            let gone = needed.iter().find_map(|other| {
                let status = self.proc(other).child.try_wait().ok()??;
                Some(format!("{other} exited ({status}) while {name} ran"))
            });
            if let Some(gone) = gone {
                break Err(gone);
            }
            if start.elapsed() > limit {
                break Err(format!("{name} still ran after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let p = self.proc(name);
        if result.is_err() {
            let _ = p.child.kill();
            let _ = wait_bounded(&mut p.child, Duration::from_secs(5));
        }
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        (result, read(&p.stdout), read(&p.stderr))
    }

    /// Fails unless the process `name` is still running.
    fn assert_running(&mut self, name: &str) {
        let p = self.proc(name);
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("{name} exited early ({status})");
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
        }
        for p in &mut self.procs {
            if wait_bounded(&mut p.child, Duration::from_secs(5)).is_none() {
                eprintln!("{} (pid {}) did not exit after kill", p.name, p.child.id());
            }
        }
        if std::thread::panicking() {
            for p in &self.procs {
                for path in [&p.stdout, &p.stderr] {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    eprintln!("---- {}:\n{}", path.display(), text.trim_end());
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_cluster_runs_across_hosts() {
    let mut hosts = Hosts::new();
    let bridge = match hosts.bridge() {
        Ok(bridge) => bridge,
        Err(why) if std::env::var("DFUT_SKIP_NETNS").as_deref() == Ok("1") => {
            eprintln!(
                "a_cluster_runs_across_hosts: skipped (DFUT_SKIP_NETNS=1), no namespaces: {why}"
            );
            return;
        }
        Err(why) => panic!(
            "cannot make network namespaces: {why} (needs root and iproute2; \
             DFUT_SKIP_NETNS=1 skips this test)"
        ),
    };
    hosts
        .wire(&bridge)
        .unwrap_or_else(|e| panic!("wiring the namespaces: {e}"));

    // 1. The scheduler, which writes the cluster credential.
    let dfut = crate::util::dfut_tool();
    let credential = hosts.dir.join("cluster.pem");
    let credential_arg = credential
        .to_str()
        .expect("a UTF-8 temporary path")
        .to_owned();
    hosts.start(
        "scheduler",
        "sched",
        &dfut,
        &[
            "scheduler",
            "--host",
            "10.77.0.1",
            "--port",
            "50051",
            "--credential-file",
            &credential_arg,
        ],
        &[("DFUT_LOG", "info")],
    );
    let scheduler_out = hosts.proc("scheduler").stdout.clone();
    let ready = eventually(LIMIT, || {
        hosts.assert_running("scheduler");
        credential.exists()
            && std::fs::read_to_string(&scheduler_out)
                .is_ok_and(|s| s.contains("scheduler listening on"))
    });
    assert!(
        ready,
        "the scheduler wrote no credential, or did not listen, within {LIMIT:?}"
    );

    // 2. Two workers, on hosts of their own, that find out by themselves
    //    which address to advertise (no --advertise).
    let worker = Path::new(WORKER);
    for (name, role, host_id) in [("worker1", "w1", "host-w1"), ("worker2", "w2", "host-w2")] {
        hosts.start(
            name,
            role,
            worker,
            &[],
            &[
                ("DFUT_ROLE", "worker"),
                ("DFUT_SCHEDULER", SCHEDULER),
                ("DFUT_CREDENTIAL_FILE", &credential_arg),
                ("DFUT_WORKER_HOST", "0.0.0.0"),
                ("DFUT_HOST_ID", host_id),
                ("DFUT_MAX_CONCURRENT", "2"),
                ("DFUT_MEMORY_MB", "2048"),
                ("DFUT_RESOURCES", "disk=1"),
                ("DFUT_LOG", "info"),
            ],
        );
    }

    // 3. The driver joins from a fourth host once both workers are in.
    let started = Instant::now();
    hosts.start(
        "driver",
        "driver",
        worker,
        &["--multi-host"],
        &[
            ("DFUT_SCHEDULER", SCHEDULER),
            ("DFUT_CREDENTIAL_FILE", &credential_arg),
            ("DFUT_SCHEDULER_MODE", "round-robin"),
            ("DFUT_WORKERS", "2"),
        ],
    );
    let cluster = ["scheduler", "worker1", "worker2"];
    let (status, stdout, stderr) = hosts.finish("driver", DRIVER_LIMIT, &cluster);
    eprintln!("driver finished in {:?}", started.elapsed());
    let ran = format!("driver ({status:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(status.is_ok_and(|s| s.success()), "failed: {ran}");
    assert!(stdout.lines().any(|l| l.trim() == "ok"), "no `ok`: {ran}");
    for name in cluster {
        hosts.assert_running(name);
    }

    // 4. `dfut status` from a fifth host lists both workers by the
    //    addresses they can be reached at.
    hosts.start(
        "status",
        "status",
        &dfut,
        &[
            "status",
            "--scheduler",
            SCHEDULER,
            "--credential-file",
            &credential_arg,
        ],
        &[],
    );
    let (status, stdout, stderr) = hosts.finish("status", LIMIT, &cluster);
    let shown = format!("dfut status ({status:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(status.is_ok_and(|s| s.success()), "failed: {shown}");
    let mut workers: Vec<IpAddr> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
        .collect();
    workers.sort();
    let expected: Vec<IpAddr> = ["10.77.0.3", "10.77.0.4"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(workers, expected, "worker addresses in {shown}");
    assert!(
        !stdout.contains("0.0.0.0"),
        "an unreachable address in {shown}"
    );
    // Each worker's declared resources, as it registered them.
    let declared = stdout
        .lines()
        .filter(|l| l.contains(": node ") && l.ends_with("2 CPUs, 2048 MiB, disk=1"))
        .count();
    assert_eq!(declared, 2, "resources in {shown}");
}
