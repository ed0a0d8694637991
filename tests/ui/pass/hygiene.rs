//! The generated code names everything by absolute path: it compiles in a
//! module without the prelude, next to shadowed `Result`, `Ok`, `Vec` and
//! `Box`, and with dfut renamed.
#![no_implicit_prelude]

extern crate dfut as renamed;
extern crate std;

#[allow(dead_code)]
struct Result;
#[allow(dead_code)]
struct Ok;
#[allow(dead_code)]
struct Vec;
#[allow(dead_code)]
struct Box;
#[allow(dead_code)]
enum Option {
    Some,
    None,
}

#[renamed::remote(crate = "renamed")]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[renamed::remote(crate = "renamed")]
fn checked(a: u64) -> ::std::result::Result<u64, ::std::string::String> {
    ::std::result::Result::Ok(a)
}

#[renamed::remote(crate = "renamed")]
async fn later(a: u64) -> u64 {
    a
}

fn main() {
    ::std::assert_eq!(add_local(1, 2), 3);
    let _f: renamed::DistFuture<u64> = add(1, 2);
    let _g: renamed::DistFuture<u64> = checked(1);
    let _h: renamed::DistFuture<u64> = later(1);
}
