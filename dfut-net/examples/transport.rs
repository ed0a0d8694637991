//! The transport alone: how fast one bulk payload moves between two
//! endpoints over loopback QUIC, with nothing of dfut above it.
//!
//! `cargo run --release -p dfut-net --example transport [BYTES] [ROUNDS]`
//! (default 256 MiB, 6 rounds). The sender and the receiver each run on a
//! thread of their own with a one-thread runtime; the receiver sums the
//! payload (four accumulators) as a reader would. Each round prints the
//! bytes made usable per second, and the sender's path: datagram size
//! found by MTU discovery, datagrams sent and packets lost so far.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dfut_net::wire::{Message, Payload};
use dfut_net::{ClusterCredential, Endpoint, EndpointOptions};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let bytes: usize = args.next().map_or(Ok(256 << 20), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(6), |s| s.parse())?;
    let credential = ClusterCredential::generate()?;
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let receiver_credential = credential.clone();
    let receiver =
        std::thread::spawn(move || receive(&receiver_credential, rounds, &addr_tx, &done_tx));
    let addr = addr_rx.recv_timeout(Duration::from_secs(10))?;
    let sent = send(&credential, addr, bytes, rounds, &done_rx);
    let received = receiver.join().map_err(|_| "the receiver panicked")?;
    sent.and(received)
}

/// One-thread runtime, as each side of the measurement runs on one.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Accepts one connection and sums `rounds` bulk payloads, reporting when
/// each is summed.
fn receive(
    credential: &ClusterCredential,
    rounds: usize,
    addr_tx: &mpsc::Sender<SocketAddr>,
    done_tx: &mpsc::Sender<(Instant, u64)>,
) -> Result<()> {
    runtime()?.block_on(async {
        let lo = "127.0.0.1:0".parse()?;
        let endpoint = Endpoint::bind(lo, credential, EndpointOptions::default())?;
        addr_tx.send(endpoint.local_addr()?)?;
        let incoming = endpoint.accept().await.ok_or("endpoint closed")?;
        let (_link, mut inbox) = incoming.establish().await?;
        let mut summed = 0;
        while summed < rounds {
            match inbox.recv().await.ok_or("connection closed")?? {
                Message::Bulk { payload, .. } => {
                    let total = sum(payload.as_slice());
                    done_tx.send((Instant::now(), total))?;
                    summed += 1;
                }
                _ => continue, // the sender's hello
            }
        }
        Ok(())
    })
}

/// Sums little-endian `u64`s with four accumulators.
fn sum(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    for chunk in bytes.chunks_exact(32) {
        for (i, a) in acc.iter_mut().enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&chunk[i * 8..i * 8 + 8]);
            *a = a.wrapping_add(u64::from_le_bytes(word));
        }
    }
    acc.iter().fold(0, |s, a| s.wrapping_add(*a))
}

/// Sends `rounds` payloads of `bytes`, one at a time, and prints each
/// round's figure once the receiver has summed it.
fn send(
    credential: &ClusterCredential,
    addr: SocketAddr,
    bytes: usize,
    rounds: usize,
    done_rx: &mpsc::Receiver<(Instant, u64)>,
) -> Result<()> {
    runtime()?.block_on(async {
        let lo = "127.0.0.1:0".parse()?;
        let endpoint = Endpoint::bind(lo, credential, EndpointOptions::default())?;
        let (link, _inbox) = endpoint.connect(addr).await?;
        link.send(Message::Subscribe)?; // the receiver's side opens on it
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let expected = sum(&data);
        let data = Arc::new(data);
        // MTU discovery probes while the connection is idle: let it finish
        // (or give up after 5 s, on a path that allows no more).
        let limit = Instant::now() + Duration::from_secs(5);
        let mut size = 0;
        while Instant::now() < limit {
            let now = link.path_stats().datagram_size;
            if now == size && now > 1200 {
                break; // no change in the last 500 ms
            }
            size = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for round in 0..rounds {
            let start = Instant::now();
            link.send(Message::Bulk {
                req: round as u64,
                payload: Payload::new(data.clone()),
            })?;
            let (end, total) = loop {
                match done_rx.try_recv() {
                    Ok(done) => break done,
                    Err(mpsc::TryRecvError::Empty) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            if total != expected {
                return Err(format!("sum {total}, expected {expected}").into());
            }
            let secs = end.duration_since(start).as_secs_f64();
            let path = link.path_stats();
            println!(
                "round {round}: {:.2} GB/s ({:.0} ms); datagrams of {} bytes, {} sent, {} lost",
                bytes as f64 / secs / 1e9,
                secs * 1e3,
                path.datagram_size,
                path.sent_packets,
                path.lost_packets,
            );
        }
        Ok(())
    })
}
