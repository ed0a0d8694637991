//! The `dfut` tool against real clusters: `dfut status` on an embedded
//! cluster, and the manual flow (`dfut scheduler` in its own process, a
//! worker and a driver joining it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const DFUT: &str = env!("CARGO_BIN_EXE_dfut");

#[dfut::remote]
fn triple(x: u64) -> u64 {
    3 * x
}

/// Runs `dfut status` against `rt`'s scheduler with the credential in `pem`.
fn status(rt: &dfut::Runtime, pem: &std::path::Path) -> std::process::Output {
    Command::new(DFUT)
        .args(["status", "--scheduler", &rt.scheduler_addr().to_string()])
        .arg("--credential-file")
        .arg(pem)
        .output()
        .unwrap()
}

fn temp_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dfut-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("cluster.pem")
}

#[test]
fn status_lists_the_live_workers() {
    let rt = dfut::Runtime::builder()
        .in_process_workers(2)
        .start()
        .unwrap();
    let _g = rt.enter();
    assert_eq!(triple(2).get(), Ok(6));
    let pem = temp_file("status");
    rt.credential().save(&pem, true).unwrap();
    let out = status(&rt, &pem);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("policy default  workers 2"), "{text}");
    for w in rt.client().workers() {
        assert!(text.contains(&w.addr.to_string()), "{text}");
    }
    assert!(text.contains("tasks: queued 0, running 0"), "{text}");
}

#[test]
fn status_with_the_wrong_credential_is_an_auth_error() {
    let rt = dfut::Runtime::builder()
        .in_process_workers(1)
        .start()
        .unwrap();
    let pem = temp_file("wrong");
    let out = Command::new(DFUT)
        .args(["credential", "--out"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = status(&rt, &pem);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authentication failed"), "{err}");
}

#[test]
fn manual_flow_scheduler_worker_driver() {
    let pem = temp_file("manual");
    let mut scheduler = Command::new(DFUT)
        .args(["scheduler", "--port", "0", "--credential-file"])
        .arg(&pem)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(scheduler.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("scheduler listening on ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .to_owned();
    // On a thread of this test process: it must not capture its output.
    let config = dfut::worker::WorkerConfig::new(addr.clone())
        .max_concurrent(2)
        .credential_file(&pem)
        .capture_output(false);
    std::thread::spawn(move || dfut::worker::run(config));
    let credential = dfut::ClusterCredential::from_file(&pem).unwrap();
    let rt = dfut::Runtime::builder()
        .join(addr.parse().unwrap())
        .credential(credential)
        .start()
        .unwrap();
    let _g = rt.enter();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rt.client().workers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        triple(triple(5)).get_timeout(Duration::from_secs(30)),
        Ok(45)
    );
    scheduler.kill().unwrap();
    scheduler.wait().unwrap();
}

#[test]
fn an_unknown_scheduler_mode_is_refused_with_the_valid_ones() {
    let pem = temp_file("mode");
    let out = Command::new(DFUT)
        .args([
            "scheduler",
            "--port",
            "0",
            "--mode",
            "fastest",
            "--credential-file",
        ])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "unknown scheduling policy `fastest` (valid: random, round-robin, \
             power-of-two, load-aware, gpu-aware, locality, default)"
        ),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn the_credential_is_kept_like_a_key() {
    use std::os::unix::fs::PermissionsExt;
    let pem = temp_file("key");
    let make = |force: bool| {
        let mut cmd = Command::new(DFUT);
        cmd.args(["credential", "--out"]).arg(&pem);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    assert!(make(false).status.success());
    let mode = std::fs::metadata(&pem).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner may read it");
    let first = std::fs::read_to_string(&pem).unwrap();
    let again = make(false);
    assert!(!again.status.success(), "an existing credential is kept");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&pem).unwrap(), first);
    assert!(make(true).status.success());
    assert_ne!(
        std::fs::read_to_string(&pem).unwrap(),
        first,
        "--force replaces it"
    );
    // A copy others may read is refused, with the fix.
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o644)).unwrap();
    let rt = dfut::Runtime::builder()
        .in_process_workers(1)
        .start()
        .unwrap();
    let out = status(&rt, &pem);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
