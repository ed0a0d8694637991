//! Looking into a running cluster: `dfut tasks`, `dfut objects` with
//! filters, and `dfut timeline`, from the command line and from Rust.

use std::net::SocketAddr;
use std::process::Command;

use dfut::ClusterCredential;
use dfut::inspect::{TaskFilter, TaskState};
use dfut_tests::*;

use crate::util::{
    LIMIT, Processes, cluster_with, dfut_tool, eventually, free_port, json_output, start_scheduler,
    tempdir,
};

/// `dfut <args> --scheduler <addr> --credential-file <pem> --json`.
fn tool_json(
    args: &[&str],
    scheduler: SocketAddr,
    pem: &std::path::Path,
) -> Vec<serde_json::Value> {
    let listed = json_output(
        Command::new(dfut_tool())
            .args(args)
            .args(["--json", "--scheduler"])
            .arg(scheduler.to_string())
            .arg("--credential-file")
            .arg(pem),
    );
    listed.as_array().expect("a JSON array").clone()
}

fn states(tasks: &[serde_json::Value]) -> Vec<&str> {
    tasks.iter().filter_map(|t| t["state"].as_str()).collect()
}

#[test]
fn dfut_tasks_lists_running_queued_backlogged_finished_and_failed_tasks() {
    // One worker of two slots, and a window of two tasks per slot: two
    // run, two queue at the worker, the rest wait in this owner's backlog.
    let rt = cluster_with(1, |b| b.window_per_slot(2));
    let _g = rt.enter();
    let dir = tempdir("inspect-tasks");
    let pem = dir.join("cluster.pem");
    rt.credential().save(&pem, false).unwrap();
    let gate = dir.join("gate");
    let done = echo(5);
    let failed = explode("listed on purpose");
    assert_eq!(done.get_timeout(LIMIT), Ok(5));
    assert!(failed.get_timeout(LIMIT).is_err());
    let held: Vec<_> = (0..200)
        .map(|_| hold_until(gate.display().to_string(), 60_000))
        .collect();
    let addr = rt.scheduler_addr();
    let mut listed = Vec::new();
    let all_states = ["running", "queued", "backlog", "finished", "failed"];
    assert!(
        eventually(LIMIT, || {
            listed = tool_json(&["tasks", "--limit", "1000"], addr, &pem);
            let seen = states(&listed);
            all_states.iter().all(|s| seen.contains(s))
        }),
        "every state listed: {listed:#?}"
    );
    let running: Vec<_> = listed.iter().filter(|t| t["state"] == "running").collect();
    assert_eq!(running.len(), 2, "one per slot: {running:#?}");
    let worker = rt.client().workers()[0].addr.to_string();
    for t in &running {
        assert!(t["function"].as_str().unwrap().ends_with("hold_until"));
        assert_eq!(t["worker"], worker.as_str());
        assert_eq!(t["ran"], "slot");
        assert_eq!(t["owner"], format!("{:x}", rt.client().node_id()));
        let (sub, rec, start) = (
            t["submitted_us"].as_u64().unwrap(),
            t["received_us"].as_u64().unwrap(),
            t["started_us"].as_u64().unwrap(),
        );
        assert!(sub > 0 && rec > 0 && start >= rec, "{t}");
        assert_eq!(t["ended_us"], 0);
    }
    let backlog = listed.iter().find(|t| t["state"] == "backlog").unwrap();
    assert_eq!(backlog["worker"], "");
    assert!(held.iter().any(|f| backlog["id"] == f.id().to_string()));
    // Filters: by state, and by function and state together.
    let failures = tool_json(&["tasks", "--state", "failed"], addr, &pem);
    assert!(states(&failures).iter().all(|s| *s == "failed"));
    let f = failures
        .iter()
        .find(|t| t["id"] == failed.id().to_string())
        .expect("the failed task is listed");
    assert!(
        f["error"].as_str().unwrap().contains("listed on purpose"),
        "{f}"
    );
    assert!(f["ended_us"].as_u64().unwrap() >= f["started_us"].as_u64().unwrap());
    let finished = tool_json(
        &["tasks", "--state", "finished", "--function", "echo"],
        addr,
        &pem,
    );
    assert_eq!(finished.len(), 1, "{finished:#?}");
    assert_eq!(finished[0]["id"], done.id().to_string());
    // The same from Rust, on the client.
    let report = rt
        .block_on(rt.client().tasks(&TaskFilter::new(), 1000))
        .unwrap();
    let backlogged = TaskFilter::new()
        .state(TaskState::Backlog)
        .owner(rt.client().node_id());
    assert!(!backlogged.apply(&report.tasks).is_empty());
    assert_eq!(report.workers, std::slice::from_ref(&worker));
    // A bad state is refused with the valid ones.
    let bad = Command::new(dfut_tool())
        .args(["tasks", "--state", "sleeping", "--scheduler"])
        .arg(addr.to_string())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("valid: backlog, queued, running"));
    std::fs::write(&gate, b"open").unwrap();
    for f in &held {
        assert_eq!(f.get_timeout(LIMIT), Ok(true));
    }
    let after = tool_json(
        &[
            "tasks",
            "--state",
            "finished",
            "--function",
            "hold_until",
            "--limit",
            "1000",
        ],
        addr,
        &pem,
    );
    assert_eq!(after.len(), 200);
    assert!(
        states(&tool_json(&["tasks"], addr, &pem))
            .iter()
            .all(|s| ["finished", "failed"].contains(s))
    );
}

#[test]
fn dfut_objects_filters_by_state_size_function_and_owner() {
    let rt = cluster_with(2, |b| b);
    let _g = rt.enter();
    let dir = tempdir("inspect-objects");
    let pem = dir.join("cluster.pem");
    rt.credential().save(&pem, false).unwrap();
    let big = bytes(300_000, 1);
    let small = bytes(100_000, 2);
    let failed = explode("object listing");
    assert!(big.get_timeout(LIMIT).is_ok() && small.get_timeout(LIMIT).is_ok());
    assert!(failed.get_timeout(LIMIT).is_err());
    let addr = rt.scheduler_addr();
    let ids = |listed: &[serde_json::Value]| -> Vec<String> {
        listed
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let large = tool_json(&["objects", "--min-bytes", "200000"], addr, &pem);
    assert_eq!(ids(&large), [big.id().to_string()]);
    let failures = tool_json(&["objects", "--state", "failed"], addr, &pem);
    assert_eq!(ids(&failures), [failed.id().to_string()]);
    let owner = format!("{:x}", rt.client().node_id());
    let mine = tool_json(
        &["objects", "--owner", &owner, "--function", "bytes"],
        addr,
        &pem,
    );
    assert_eq!(ids(&mine), [big.id().to_string(), small.id().to_string()]);
    let others = tool_json(&["objects", "--owner", "1234"], addr, &pem);
    assert!(others.is_empty(), "{others:#?}");
    let objects = rt.block_on(rt.client().objects(10)).unwrap();
    assert_eq!(objects[0].id, big.id());
}

#[test]
fn dfut_timeline_draws_the_tasks_after_their_driver_has_gone() {
    let dir = tempdir("inspect-timeline");
    let pem = dir.join("cluster.pem");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut procs = Processes::default();
    start_scheduler(&mut procs, port, &pem);
    assert!(eventually(LIMIT, || pem.is_file()));
    let credential = ClusterCredential::from_file(&pem).unwrap();
    for _ in 0..2 {
        procs.start(&mut crate::util::worker_command(addr, &pem));
    }
    let rt = dfut::Runtime::builder()
        .join(addr)
        .credential(credential)
        .start()
        .unwrap();
    let ids: Vec<String> = {
        let _g = rt.enter();
        assert!(eventually(LIMIT, || rt.client().workers().len() == 2));
        let runs: Vec<_> = (0..8).map(|i| slow_echo(i, 30)).collect();
        let big = bytes(200_000, 3);
        assert_eq!(sum_bytes(big.clone()).get_timeout(LIMIT), Ok(600_000));
        assert_eq!(big.get_timeout(LIMIT).map(|v| v.len()), Ok(200_000));
        for (i, f) in runs.iter().enumerate() {
            assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
        }
        runs.iter().map(|f| f.id().to_string()).collect()
    };
    drop(rt); // the driver is gone; the workers keep what they ran
    let trace = dir.join("trace.json");
    let picture = dir.join("trace.svg");
    let out = Command::new(dfut_tool())
        .args([
            "timeline",
            "--scheduler",
            &addr.to_string(),
            "--credential-file",
        ])
        .arg(&pem)
        .arg("--out")
        .arg(&trace)
        .arg("--svg")
        .arg(&picture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let runs: Vec<_> = events
        .iter()
        .filter(|e| e["cat"] == "run" && e["name"].as_str().unwrap().ends_with("slow_echo"))
        .collect();
    assert_eq!(runs.len(), 8, "every run drawn");
    for id in &ids {
        assert!(runs.iter().any(|e| e["args"]["id"] == id.as_str()), "{id}");
    }
    for e in &runs {
        assert!(e["dur"].as_u64().unwrap() >= 30_000, "ran its 30 ms: {e}");
    }
    let processes: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(
        processes
            .iter()
            .filter(|p| p.starts_with("worker "))
            .count(),
        2
    );
    let tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(
        tracks.contains(&"slot 1"),
        "two ran at once on a worker: {tracks:?}"
    );
    assert!(tracks.iter().any(|t| t.starts_with("queue")));
    assert!(
        events
            .iter()
            .any(|e| e["cat"] == "fetch" && e["args"]["bytes"].as_u64() > Some(200_000)),
        "the fetch of the large result is drawn"
    );
    let svg = std::fs::read_to_string(&picture).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.matches("slow_echo</title>").count() >= 8, "{svg}");
}
