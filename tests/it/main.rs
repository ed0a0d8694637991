//! Integration tests: a real scheduler and real worker processes talking
//! QUIC on loopback. Every wait is bounded.

mod faults;
mod objects;
mod orphans;
mod security;
mod tasks;
mod util;
