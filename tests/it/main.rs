//! Integration tests: a real scheduler and real worker processes talking
//! QUIC on loopback. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a panic is the failure report

mod adversary;
mod chaos;
mod dashboard;
mod deadlines;
mod faults;
mod hosts;
mod inspect;
mod logs;
mod mapreduce;
mod matrix;
mod nesting;
mod objects;
mod orphans;
mod ownership;
mod rag;
mod resources;
mod restart;
mod scheduling;
mod security;
mod shared_memory;
mod signatures;
mod tasks;
mod tidy;
mod util;
