//! A seeded UDP relay between processes: drops, delays (and so reorders)
//! packets, and can cut the link entirely. It stands in for netem, which
//! this kernel lacks.
//!
//! Each client address gets its own upstream socket to the target, so the
//! target sees one peer per client; replies go back from the listening
//! socket. Bound: at most `MAX_CLIENTS` clients; the one idle longest is
//! dropped to admit another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

const MAX_CLIENTS: usize = 256;

/// How a relay treats packets, in both directions.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// Fraction of packets dropped.
    pub loss: f64,
    /// Each packet is held for a uniform random time up to this.
    pub max_delay: Duration,
}

/// A running relay.
pub struct Relay {
    /// Where clients send to.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    /// Relays from a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr, impairment: Impairment, seed: u64) -> Self {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let addr = listen.local_addr().expect("relay address");
        let cut = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let link = Link {
            impairment,
            cut: cut.clone(),
            dropped: dropped.clone(),
            rng: Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
        };
        tokio::spawn(forward(listen, target, link));
        Self { addr, cut, dropped }
    }

    /// Cuts (`true`) or heals the link.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }

    /// Packets dropped so far (by loss or cut).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What both directions share.
#[derive(Clone)]
struct Link {
    impairment: Impairment,
    cut: Arc<AtomicBool>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
}

impl Link {
    /// `None`: drop the packet; else how long to hold it.
    fn fate(&self) -> Option<Duration> {
        if self.cut.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.random_bool(self.impairment.loss.clamp(0.0, 1.0)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let max = self.impairment.max_delay.as_micros() as u64;
        Some(Duration::from_micros(if max == 0 {
            0
        } else {
            rng.random_range(0..=max)
        }))
    }

    /// Sends `packet` to `to` from `socket`, after its fate.
    fn pass(&self, socket: &Arc<UdpSocket>, packet: Vec<u8>, to: SocketAddr) {
        let Some(delay) = self.fate() else { return };
        if delay.is_zero() {
            let _ = socket.try_send_to(&packet, to);
            return;
        }
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = socket.send_to(&packet, to).await;
        });
    }
}

struct Client {
    upstream: Arc<UdpSocket>,
    last: Instant,
    task: tokio::task::JoinHandle<()>,
}

async fn forward(listen: Arc<UdpSocket>, target: SocketAddr, link: Link) {
    let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        if !clients.contains_key(&from) {
            if clients.len() >= MAX_CLIENTS
                && let Some(oldest) = clients.iter().min_by_key(|(_, c)| c.last).map(|(a, _)| *a)
                && let Some(c) = clients.remove(&oldest)
            {
                c.task.abort();
            }
            let Ok(upstream) = UdpSocket::bind("127.0.0.1:0").await else {
                continue;
            };
            if upstream.connect(target).await.is_err() {
                continue;
            }
            let upstream = Arc::new(upstream);
            let task = tokio::spawn(back(upstream.clone(), listen.clone(), from, link.clone()));
            clients.insert(
                from,
                Client {
                    upstream,
                    last: Instant::now(),
                    task,
                },
            );
        }
        if let Some(c) = clients.get_mut(&from) {
            c.last = Instant::now();
            link.pass(&c.upstream, buf[..n].to_vec(), target);
        }
    }
}

/// Replies from the target to one client.
async fn back(upstream: Arc<UdpSocket>, listen: Arc<UdpSocket>, client: SocketAddr, link: Link) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = upstream.recv(&mut buf).await {
        link.pass(&listen, buf[..n].to_vec(), client);
    }
}
