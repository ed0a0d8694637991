//! Hostile input: garbage frames, raw UDP noise and peers without the
//! cluster credential. Each is refused without disturbing anyone else.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use dfut::{ClusterCredential, Error};
use dfut_net::{Endpoint, NetError};
use dfut_tests::*;

use crate::util::{LIMIT, cluster};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn tasks_done(rt: &dfut::Runtime) -> u64 {
    rt.client()
        .workers()
        .iter()
        .map(|w| w.load.tasks_done)
        .sum()
}

/// Writes `bytes` on a fresh authenticated stream to `worker` and waits for
/// the worker to close the connection.
async fn send_raw(
    credential: &ClusterCredential,
    worker: SocketAddr,
    bytes: Vec<u8>,
    finish: bool,
) {
    let ep = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        credential,
        Default::default(),
    )
    .unwrap();
    let (conn, mut send, _recv) = ep.connect_raw(worker).await.unwrap();
    send.write_all(&bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let closed = tokio::time::timeout(LIMIT, conn.closed()).await;
    assert!(
        closed.is_ok(),
        "the worker closes a connection that sent garbage"
    );
}

#[test]
fn garbage_at_a_live_worker_closes_only_that_connection() {
    let rt = cluster(1);
    let _g = rt.enter();
    let worker = rt.client().workers()[0].addr;
    assert_eq!(echo(1).get_timeout(LIMIT), Ok(1));
    let credential = rt.credential().clone();
    block_on(async {
        // Bytes that are not an archive.
        let mut garbage = 16u32.to_le_bytes().to_vec();
        garbage.extend((0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5a));
        send_raw(&credential, worker, garbage, false).await;
        // A length far over the frame limit.
        send_raw(&credential, worker, u32::MAX.to_le_bytes().to_vec(), false).await;
    });
    // A frame cut short by the end of the stream: the worker just drops the
    // stream's connection when it ends.
    block_on(async {
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &credential,
            Default::default(),
        )
        .unwrap();
        let (_conn, mut send, _recv) = ep.connect_raw(worker).await.unwrap();
        send.write_all(&[100, 0, 0, 0, 1, 2]).await.unwrap();
        send.finish().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    // Raw UDP noise at the QUIC port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        udp.send_to(&[i; 1200], worker).unwrap();
    }
    // The worker still serves its real clients.
    let after: Vec<_> = (0..100).map(echo).collect();
    for (i, f) in after.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
}

#[test]
fn a_peer_without_the_credential_is_refused_and_nothing_runs() {
    let rt = cluster(1);
    let _g = rt.enter();
    assert_eq!(echo(1).get_timeout(LIMIT), Ok(1));
    assert!(crate::util::eventually(LIMIT, || tasks_done(&rt) == 1));
    let worker = rt.client().workers()[0].addr;
    let stranger = ClusterCredential::generate().unwrap();
    let refused = block_on(async {
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &stranger,
            Default::default(),
        )
        .unwrap();
        ep.connect(worker).await.map(|_| ())
    });
    assert!(matches!(refused, Err(NetError::Auth { .. })), "{refused:?}");

    // Joining the cluster with the wrong credential fails with Error::Auth.
    let joined = dfut::Runtime::builder()
        .join(rt.scheduler_addr())
        .credential(stranger)
        .start();
    assert!(matches!(joined, Err(Error::Auth(_))), "{joined:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tasks_done(&rt), 1, "nothing the stranger sent was executed");
}
