//! The worker program of the integration tests: it links the remote
//! functions of `dfut_tests` and serves them. Started with `--driver` it is
//! instead a driver that starts a local cluster of 2 workers, prints their
//! process ids and waits (or panics with `--driver-panic`), for the orphan
//! tests.

use dfut_benches as _;
use dfut_tests as _;

fn main() -> dfut::Result<()> {
    let mode = std::env::args().nth(1);
    let rt = if mode.is_some() {
        dfut::Runtime::builder().workers(2).start()?
    } else {
        // A worker started by a test's local cluster: serves and never returns.
        dfut::init()?
    };
    let pids: Vec<String> = rt.worker_pids().iter().map(u32::to_string).collect();
    println!("workers {}", pids.join(" "));
    if mode.as_deref() == Some("--driver-panic") {
        std::thread::sleep(std::time::Duration::from_millis(200));
        panic!("driver panics on purpose");
    }
    std::thread::sleep(std::time::Duration::from_secs(120));
    Ok(())
}
