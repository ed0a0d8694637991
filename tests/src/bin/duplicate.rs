//! A program with two remote functions registered under one name: starting
//! dfut must refuse it, naming both definitions (`signatures.rs` runs it).
//! Prints `started` if it was not refused.

#[dfut::remote(name = "dfut_tests::clash")]
fn first(x: u64) -> u64 {
    x
}

#[dfut::remote(name = "dfut_tests::clash")]
fn second(x: u64) -> u64 {
    x + 1
}

fn main() {
    match dfut::Runtime::builder().in_process_workers(1).start() {
        Ok(_rt) => println!("started"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
