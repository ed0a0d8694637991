//! Local workers never outlive their driver, however it ends.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{WORKER, eventually};

fn alive(pid: u32) -> bool {
    // A zombie (state Z) has exited; only its parent has not reaped it yet.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Starts the test program as a driver in `mode`; returns it and its
/// workers' process ids.
fn driver(mode: &str) -> (std::process::Child, Vec<u32>) {
    let mut child = Command::new(WORKER)
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let pids: Vec<u32> = line
        .strip_prefix("workers ")
        .unwrap_or_else(|| panic!("unexpected driver output {line:?}"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));
    (child, pids)
}

#[test]
fn workers_exit_when_the_driver_is_killed() {
    let (mut child, pids) = driver("--driver");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))),
        "workers {pids:?} outlived their killed driver"
    );
}

#[test]
fn workers_exit_when_the_driver_panics() {
    let (mut child, pids) = driver("--driver-panic");
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        eventually(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p))),
        "workers {pids:?} outlived their panicking driver"
    );
}
