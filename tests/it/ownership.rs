//! An owner's objects are tied to its secret, outlive its connections for a
//! grace period, and are freed once it is really gone.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use dfut_net::Endpoint;
use dfut_net::wire::{Message, ObjectId, Role};
use dfut_tests::*;

use crate::util::{LIMIT, WORKER, cluster_with, eventually};

/// Objects held on the workers, as the scheduler reports them.
fn objects_on_workers(rt: &dfut::Runtime) -> u64 {
    rt.block_on(dfut::scheduler::query_status(
        rt.scheduler_addr(),
        rt.credential(),
    ))
    .map(|s| s.workers.iter().map(|w| w.load.objects).sum())
    .unwrap_or(u64::MAX)
}

#[test]
fn a_connection_without_the_owners_secret_frees_nothing() {
    let rt = cluster_with(1, |b| b);
    let _g = rt.enter();
    let held = bytes(100 << 10, 7);
    assert_eq!(held.get_timeout(LIMIT).map(|v| v.len()), Ok(100 << 10));
    assert!(
        eventually(LIMIT, || objects_on_workers(&rt) >= 1),
        "held before: {}",
        objects_on_workers(&rt)
    );
    let worker = rt.client().workers()[0].addr;
    let node = rt.client().node_id();
    let theirs: Vec<ObjectId> = (0..1000).map(|seq| ObjectId { owner: node, seq }).collect();
    let credential = rt.credential().clone();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &credential,
            Default::default(),
        )
        .unwrap();
        // Claims to be the owner with a wrong secret: refused and closed.
        let (impostor, _inbox) = ep.connect(worker).await.unwrap();
        impostor
            .send(Message::Hello {
                node,
                role: Role::Client,
                secret: 1,
            })
            .unwrap();
        let _ = impostor.send(Message::Free(theirs.clone()));
        let closed = tokio::time::timeout(LIMIT, impostor.closed()).await;
        assert!(
            closed.is_ok(),
            "the worker closes the impostor's connection"
        );
        // Speaks for itself, then frees and cancels another owner's objects
        // and closes: none of it touches them.
        let (other, _inbox) = ep.connect(worker).await.unwrap();
        other
            .send(Message::Hello {
                node: node ^ 1,
                role: Role::Client,
                secret: 2,
            })
            .unwrap();
        other.send(Message::Free(theirs.clone())).unwrap();
        other.send(Message::Cancel(theirs)).unwrap();
        other.close("done");
        ep.close();
    });
    // A fresh call after those messages has been read proves they were.
    assert_eq!(echo(1).get_timeout(LIMIT), Ok(1));
    assert!(
        objects_on_workers(&rt) >= 1,
        "the owner's object is still held"
    );
    let again = sum_bytes(&held);
    assert_eq!(again.get_timeout(LIMIT), Ok(7 * (100 << 10)));
}

#[test]
fn a_dead_owners_objects_are_freed_after_the_grace_period() {
    let rt = cluster_with(2, |b| b.worker_env("DFUT_OWNER_GRACE_MS", "1500"));
    let _g = rt.enter();
    // Our own object, which must survive the other owner's cleanup.
    let ours = bytes(100 << 10, 3);
    assert!(ours.get_timeout(LIMIT).is_ok());
    let dir = crate::util::tempdir("owner");
    let pem = dir.join("cluster.pem");
    rt.credential().save(&pem, true).unwrap();
    let mut owner = Command::new(WORKER)
        .args(["--owner", "20"])
        .env("DFUT_SCHEDULER", rt.scheduler_addr().to_string())
        .env("DFUT_CREDENTIAL_FILE", &pem)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    assert!(eventually(LIMIT, || objects_on_workers(&rt) >= 21));
    owner.kill().unwrap(); // by process id
    owner.wait().unwrap();
    assert!(
        eventually(LIMIT, || objects_on_workers(&rt) == 1),
        "the dead owner's 20 objects are freed, ours stays"
    );
    assert_eq!(sum_bytes(&ours).get_timeout(LIMIT), Ok(3 * (100 << 10)));
    let _ = std::fs::remove_dir_all(&dir);
}
