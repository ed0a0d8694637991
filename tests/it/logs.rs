//! What worker processes print reaches the driver, each line prefixed
//! with its worker, and stays in a log file per worker.

use std::process::Command;

use crate::util::{WORKER, tempdir};

/// Runs the `--worker-logs` driver with `env`; its standard output and
/// error, and its worker's process id.
fn run_driver(dir: &std::path::Path, env: &[(&str, &str)]) -> (String, String, u32) {
    let out = Command::new(WORKER)
        .arg("--worker-logs")
        .env("DFUT_WORKERS", "1")
        .env("DFUT_LOG_DIR", dir)
        .envs(env.iter().copied())
        .output()
        .expect("the driver runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{stdout}\n{stderr}"
    );
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("worker "))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no worker pid in {stdout}"));
    (stdout, stderr, pid)
}

/// The line of `text` that contains `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> Option<&'a str> {
    text.lines().find(|l| l.contains(needle))
}

#[test]
fn what_workers_print_reaches_the_driver_prefixed_and_stays_in_a_file() {
    // Made by the worker (mode 0700): a shared directory is refused.
    let dir = tempdir("worker-logs").join("logs");
    let (stdout, stderr, pid) = run_driver(&dir, &[]);
    let prefix = format!("(pid={pid}, ip=127.0.0.1:");
    let hello = line_with(&stdout, "chatty 7 says hello").unwrap_or_else(|| panic!("{stdout}"));
    assert!(hello.starts_with(&prefix), "{hello}");
    let complaint = line_with(&stderr, "chatty 7 complains").unwrap_or_else(|| panic!("{stderr}"));
    assert!(complaint.starts_with(&prefix), "{complaint}");
    let warning = line_with(&stderr, "chatty 7 warns").unwrap_or_else(|| panic!("{stderr}"));
    assert!(warning.starts_with(&prefix), "{warning}");
    assert!(
        warning.contains("[task ") && warning.contains("dfut_tests::chatty]"),
        "the task is named: {warning}"
    );
    assert!(
        !stdout.contains("complains") && !stderr.contains("says hello"),
        "each to its stream"
    );
    let from_async =
        line_with(&stderr, "chatty async 8 warns").unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        from_async.starts_with(&prefix) && from_async.contains("dfut_tests::chatty_async]"),
        "an async task is named too: {from_async}"
    );
    // The worker's own file has every line, unprefixed.
    let file = std::fs::read_to_string(dir.join(format!("worker-{pid}.log"))).unwrap();
    for needle in [
        "chatty 7 says hello",
        "chatty 7 complains",
        "chatty 7 warns",
    ] {
        assert!(line_with(&file, needle).is_some(), "{needle} in {file}");
    }
    assert!(!file.contains("(pid="), "{file}");
    assert!(
        !file.contains('\u{1b}'),
        "no colour codes in the file: {file}"
    );

    // Switched off: nothing reaches the driver, the file still has it all.
    let (stdout, stderr, pid) = run_driver(&dir, &[("DFUT_WORKER_LOGS", "0")]);
    assert!(
        !stdout.contains("chatty") && !stderr.contains("chatty"),
        "{stdout}\n{stderr}"
    );
    let file = std::fs::read_to_string(dir.join(format!("worker-{pid}.log"))).unwrap();
    assert!(line_with(&file, "chatty 7 says hello").is_some(), "{file}");
}
