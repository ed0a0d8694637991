//! A hostile member: a client holding the cluster credential tries every
//! abuse a member could, against the worker and the scheduler a victim
//! driver uses, while the victim holds results there. The victim's results
//! stay correct, the worker stays in the cluster (same process), its
//! memory stays bounded, and no process aborts.
//!
//! (500 idle connections here, opened 10 at a time: each handshake costs
//! the worker tens of milliseconds in a debug build, and the suite runs in
//! CI.)

use std::net::SocketAddr;

use dfut::Data;
use dfut::matrix::Matrix;
use dfut_net::Endpoint;
use dfut_net::wire::{Arg, Item, Message, ObjectId, Outcome, Role, TaskSpec, WorkerInfo};
use dfut_tests::*;

use crate::util::{LIMIT, cluster, rss};

/// How many of each abuse.
const RANDOM_FETCHES: u64 = 200_000;
const STALLED_FRAMES: usize = 200;
const IDLE_CONNECTIONS: usize = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn task(owner: u64, seq: u64, function: &str, args: Vec<Arg>) -> TaskSpec {
    TaskSpec {
        id: ObjectId { owner, seq },
        function: function.into(),
        signature: 0,
        args,
        inline_max: 1 << 16,
        timeout_ms: 0,
        confirm_start: false,
        low_priority: false,
        submitted_us: 0,
        resources: Default::default(),
    }
}

fn value<T: Data>(v: &T) -> Arg {
    Arg::Value(v.encode().unwrap_or_else(|e| panic!("encode: {e}")))
}

/// Speaks for a fresh owner of its own; returns the link and its inbox.
async fn member(
    ep: &Endpoint,
    to: SocketAddr,
    role: Role,
    node: u64,
) -> (dfut_net::Link, dfut_net::Inbox) {
    // A few tries: on a loaded machine a handshake may time out.
    let mut tries = 0;
    let (link, inbox) = loop {
        match ep.connect(to).await {
            Ok(pair) => break pair,
            Err(e) if tries < 3 => {
                tries += 1;
                eprintln!("connect {to}: {e}; again");
            }
            Err(e) => panic!("connect {to}: {e}"),
        }
    };
    link.send(Message::Hello {
        node,
        role,
        secret: rand::random(),
    })
    .unwrap_or_else(|e| panic!("hello: {e}"));
    (link, inbox)
}

/// Waits for the `Done` of `n` tasks on `inbox`; returns their outcomes.
async fn outcomes(inbox: &mut dfut_net::Inbox, n: usize) -> Vec<Outcome> {
    let mut got = Vec::new();
    while got.len() < n {
        let msg = tokio::time::timeout(LIMIT, inbox.recv()).await;
        match msg {
            Ok(Some(Ok(Message::Done { outcome, .. }))) => got.push(outcome),
            Ok(Some(Ok(_))) => {}
            other => panic!("no answer to the hostile member's tasks: {other:?}"),
        }
    }
    got
}

#[test]
fn a_hostile_member_cannot_hurt_another_owners_work_or_its_worker() {
    let _heavy = crate::util::heavy();
    let rt = cluster(1);
    let _g = rt.enter();
    let worker = rt.client().workers()[0].clone();
    let pid = rt.worker_pids()[0];
    let victim = rt.client().node_id();
    // The victim's results, held on the worker (too large to travel
    // inline), and its first sequence numbers, which the attacker guesses.
    let held: Vec<_> = (0..8u8).map(|i| bytes(100 << 10, i)).collect();
    for (i, h) in held.iter().enumerate() {
        assert_eq!(h.get_timeout(LIMIT).map(|v| v[0]), Ok(i as u8));
    }
    let theirs: Vec<ObjectId> = (0..1_000)
        .map(|seq| ObjectId { owner: victim, seq })
        .collect();
    let before = rss(pid);
    let credential = rt.credential().clone();
    let scheduler = rt.scheduler_addr();
    let attack = runtime();
    // Held open until the checks below are done.
    let mut kept = Vec::new();
    attack.block_on(async {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let ep = Endpoint::bind(lo, &credential, Default::default())
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let me = rand::random::<u64>() | 1;

        // 1. Spoofing the victim's id (without its secret), then, as itself,
        //    freeing, cancelling and overwriting the victim's objects.
        let (spoof, _inbox) = member(&ep, worker.addr, Role::Client, victim).await;
        let _ = spoof.send(Message::Free(theirs.clone()));
        assert!(
            tokio::time::timeout(LIMIT, spoof.closed()).await.is_ok(),
            "a connection naming the victim without its secret is closed"
        );
        let (own, mut inbox) = member(&ep, worker.addr, Role::Client, me).await;
        own.send(Message::Free(theirs.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        own.send(Message::Cancel(theirs.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let overwrite: Vec<TaskSpec> = theirs
            .iter()
            .map(|id| task(id.owner, id.seq, "dfut_tests::echo", vec![value(&666u64)]))
            .collect();
        own.send(Message::Submit(overwrite))
            .unwrap_or_else(|e| panic!("{e}"));

        // 2. Oversized dimensions to dfut's own functions: errors, not an
        //    abort. (`m x 0` times `0 x n` sends no data at all.)
        let tall = Matrix::new(u32::MAX as usize, 0, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let wide = Matrix::new(0, u32::MAX as usize, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let empty = Matrix::new(0, 0, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let huge = vec![u32::MAX; 2];
        let hostile = vec![
            task(
                me,
                1,
                "dfut::matrix::tiled::multiply",
                vec![value(&tall), value(&wide)],
            ),
            task(
                me,
                2,
                "dfut::matrix::tiled::assemble",
                vec![
                    Arg::List(vec![Item::Value(empty.encode().unwrap_or_default()); 4]),
                    value(&huge),
                    value(&huge),
                ],
            ),
            task(
                me,
                3,
                "dfut::matrix::tiled::cut",
                vec![
                    value(&empty),
                    value(&u32::MAX),
                    value(&u32::MAX),
                    value(&u32::MAX),
                    value(&u32::MAX),
                ],
            ),
        ];
        own.send(Message::Submit(hostile))
            .unwrap_or_else(|e| panic!("{e}"));
        for outcome in outcomes(&mut inbox, 3).await {
            assert!(
                matches!(&outcome, Outcome::Failed(f) if !f.message.is_empty()),
                "a clear error: {outcome:?}"
            );
        }

        // 3. Random fetches: ids nobody computed here.
        for req in 0..RANDOM_FETCHES {
            let id = ObjectId {
                owner: rand::random(),
                seq: rand::random(),
            };
            let _ = own.send(Message::Fetch {
                req,
                id,
                host: String::new(),
            });
        }

        // 4. Frame headers announcing 1 GiB, then silence.
        for _ in 0..STALLED_FRAMES {
            let (conn, mut send, _recv) = ep
                .connect_raw(worker.addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            send.write_all(&(1u32 << 30).to_le_bytes())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            kept.push(Box::new((conn, send)) as Box<dyn std::any::Any + Send>);
        }

        // 5. Idle connections, each speaking for an owner of its own:
        //    more than the worker keeps open, which refuses the rest.
        let t = std::time::Instant::now();
        let mut opened = 0;
        for batch in 0..IDLE_CONNECTIONS / 10 {
            let tried = futures_util::future::join_all((0..10).map(|k| {
                let node = me + 2 * (batch * 10 + k) as u64;
                let ep = &ep;
                async move {
                    let (link, inbox) = ep.connect(worker.addr).await.ok()?;
                    let secret = rand::random();
                    let hello = Message::Hello {
                        node,
                        role: Role::Client,
                        secret,
                    };
                    link.send(hello).ok()?;
                    Some((link, inbox))
                }
            }))
            .await;
            for pair in tried.into_iter().flatten() {
                opened += 1;
                kept.push(Box::new(pair));
            }
        }
        eprintln!(
            "{IDLE_CONNECTIONS} idle connections tried in {:?}: {opened} opened, the rest refused",
            t.elapsed()
        );
        // What a worker keeps open (it uses the default).
        let cap = dfut_net::EndpointOptions::default().max_connections;
        assert!(
            opened < IDLE_CONNECTIONS && opened <= cap,
            "the worker keeps at most {cap} connections open: {opened}"
        );

        // 6. At the scheduler: taking the live worker's id, and fake
        //    workers at addresses nobody serves, kept alive by heartbeats.
        let mut thief_info = WorkerInfo::default();
        thief_info.id = worker.id;
        thief_info.addr = "127.0.0.1:9".into();
        let (thief, _inbox) = member(&ep, scheduler, Role::Worker, worker.id).await;
        let _ = thief.send(Message::Register(thief_info));
        assert!(
            tokio::time::timeout(LIMIT, thief.closed()).await.is_ok(),
            "registering a live worker's id is refused"
        );
        // A second worker at the live worker's address (it answers the
        // scheduler's probe, being real) would draw tasks meant for a
        // worker that does not exist.
        let mut double = WorkerInfo::default();
        double.id = me ^ (7 << 40);
        double.addr = worker.addr.to_string();
        double.max_concurrent = 64;
        let (link, _inbox) = member(&ep, scheduler, Role::Worker, double.id).await;
        link.send(Message::Register(double))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            tokio::time::timeout(LIMIT, link.closed()).await.is_ok(),
            "a registration at a live worker's address is refused"
        );
        // A description as large as a message: 100,000 custom resources
        // (each owner would keep and copy them all).
        let mut bloated = WorkerInfo::default();
        bloated.id = me ^ (9 << 40);
        bloated.addr = "127.0.0.1:9".into();
        bloated.max_concurrent = 2;
        bloated.resources = (0..100_000)
            .map(|i| dfut_net::wire::ResourceAmount {
                name: format!("r{i}"),
                amount: 1,
            })
            .collect();
        let (link, _inbox) = member(&ep, scheduler, Role::Worker, bloated.id).await;
        link.send(Message::Register(bloated))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            tokio::time::timeout(LIMIT, link.closed()).await.is_ok(),
            "a bloated worker description is refused"
        );
        for i in 0..3u64 {
            let mut fake = WorkerInfo::default();
            fake.id = me ^ (i << 32);
            fake.addr = format!("127.0.0.1:{}", 9 + i);
            fake.max_concurrent = 64;
            let (link, _inbox) = member(&ep, scheduler, Role::Worker, fake.id).await;
            link.send(Message::Register(fake))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                tokio::time::timeout(LIMIT, link.closed()).await.is_ok(),
                "a registration at an address nobody serves is refused"
            );
        }
        kept.push(Box::new(ep));
    });

    // The victim: its results are intact, and new work gives the right
    // answers.
    for (i, h) in held.iter().enumerate() {
        let sum = sum_bytes(h).get_timeout(LIMIT);
        assert_eq!(sum, Ok(i as u64 * (100 << 10)), "held result {i}");
    }
    let fresh: Vec<_> = (0..200).map(inc).collect();
    for (i, f) in fresh.iter().enumerate() {
        let got = f.get_timeout(LIMIT);
        assert_eq!(got, Ok(i as u64 + 1), "new call {i}: {got:?}");
    }
    // The worker is the same process, still a member, and its memory is
    // bounded.
    assert!(rt.client().workers().iter().any(|w| w.id == worker.id));
    assert_eq!(rt.worker_pids(), vec![pid]);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the worker lives"
    );
    let after = rss(pid);
    eprintln!(
        "worker memory {} MiB before, {} MiB under attack ({RANDOM_FETCHES} random fetches, \
         {STALLED_FRAMES} stalled 1 GiB frames, {IDLE_CONNECTIONS} idle connections tried)",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (200 << 20),
        "worker memory grew from {before} to {after} bytes"
    );
    drop(kept);
    drop(attack);
}
