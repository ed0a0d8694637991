//! Registered names and signatures across binaries: this test binary and
//! the worker program define functions under the same names, with the
//! same or with other types; and a binary with a name defined twice.

use std::process::Command;

use crate::util::cluster;

/// Same name and types as the worker program's.
#[dfut::remote(name = "dfut_tests::signature::same")]
fn same_types(x: u64) -> u64 {
    x + 1
}

/// Same name as the worker program's, but it takes a `String` there a
/// `u64`.
#[dfut::remote(name = "dfut_tests::signature::other")]
fn other_types(x: String) -> u64 {
    x.len() as u64
}

#[test]
fn a_call_reaches_the_same_name_in_another_binary_only_with_the_same_types() {
    let rt = cluster(1);
    let _g = rt.enter();
    // The worker program runs its own definition: x + 1.
    assert_eq!(same_types(41).get().unwrap(), 42);
    match other_types("hello").get() {
        Err(dfut::Error::SignatureMismatch { function, message }) => {
            assert_eq!(function, "dfut_tests::signature::other");
            assert!(
                message.contains("worker.rs"),
                "names the definition: {message}"
            );
        }
        other => panic!("expected a signature mismatch, got {other:?}"),
    }
    // The worker is fine afterwards.
    assert_eq!(same_types(1).get().unwrap(), 2);
}

#[test]
fn a_binary_with_a_name_defined_twice_does_not_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_dfut-test-duplicate"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("started"));
    assert!(stderr.contains("`dfut_tests::clash`"), "{stderr}");
    let locations = stderr.matches("duplicate.rs:").count();
    assert_eq!(locations, 2, "both definitions named: {stderr}");
}
