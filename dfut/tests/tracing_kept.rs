//! A program's own `tracing` subscriber is kept: `dfut::init_tracing`
//! (which `dfut::init` calls) installs one only if none is set (its own
//! binary: a subscriber is set once per process).

#[test]
fn a_subscriber_the_program_installed_is_kept() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry())
        .expect("the first subscriber of this process");
    dfut::init_tracing();
    assert!(tracing::dispatcher::get_default(|d| {
        d.is::<tracing_subscriber::Registry>()
    }));
}
