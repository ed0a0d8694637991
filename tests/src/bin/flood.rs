//! Hammers a dfut endpoint with connection attempts under a credential of
//! another cluster: `dfut-test-flood ADDR CONCURRENCY SECONDS`. Each of
//! CONCURRENCY loops connects, is refused, and connects again, until
//! SECONDS pass; then it prints `attempts=N refused=R unanswered=U
//! accepted=A` (refused: an error; unanswered: no answer within 2 s;
//! accepted: a connection made, which must never happen). The security
//! tests run several of these, CPU-capped, against a live worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dfut::ClusterCredential;
use dfut_net::Endpoint;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(concurrency), Some(seconds)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
        args.get(3).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: dfut-test-flood ADDR CONCURRENCY SECONDS");
        std::process::exit(2);
    };
    let stranger = match ClusterCredential::generate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flood: {e}");
            std::process::exit(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flood: {e}");
            std::process::exit(1);
        }
    };
    // attempts, refused, unanswered, accepted
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let until = Instant::now() + Duration::from_secs(seconds);
    rt.block_on(async {
        let ep = match Endpoint::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &stranger,
            Default::default(),
        ) {
            Ok(ep) => Arc::new(ep),
            Err(e) => {
                eprintln!("flood: {e}");
                std::process::exit(1);
            }
        };
        let loops: Vec<_> = (0..concurrency)
            .map(|_| {
                let (ep, counts) = (ep.clone(), counts.clone());
                tokio::spawn(async move {
                    while Instant::now() < until {
                        counts[0].fetch_add(1, Ordering::Relaxed);
                        let tried = tokio::time::timeout(Duration::from_secs(2), ep.connect(addr));
                        let outcome = match tried.await {
                            Ok(Err(_)) => 1,
                            Err(_) => 2,
                            Ok(Ok(_)) => 3,
                        };
                        counts[outcome].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for l in loops {
            let _ = l.await;
        }
    });
    let [attempts, refused, unanswered, accepted] =
        [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    println!("attempts={attempts} refused={refused} unanswered={unanswered} accepted={accepted}");
}
