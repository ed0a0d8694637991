//! The fault suite's quick cases (`scripts/chaos.sh` runs them all, with
//! larger jobs): worker kills with and without retries, a paused worker, a
//! worker cut off from the scheduler, a scheduler restart and 5 % packet
//! loss, each on a fresh cluster of real processes.

use std::process::Command;

#[test]
fn the_quick_fault_scenarios_pass() {
    // Built next to the test binaries; the suite finds the `dfut` tool and
    // the worker program next to itself.
    crate::util::dfut_tool();
    let out = Command::new(env!("CARGO_BIN_EXE_dfut-chaos"))
        .args([
            "--tasks",
            "1000",
            "kill",
            "kill-noretry",
            "pause",
            "partition",
        ])
        .args(["scheduler-restart", "lossy"])
        .output()
        .expect("the fault suite runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "a scenario failed:\n{stdout}");
    assert!(stdout.contains("6 scenarios, 0 failed"), "{stdout}");
}
