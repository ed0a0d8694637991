//! `dfut::init_tracing` with no `DFUT_LOG`: warnings and errors, nothing
//! quieter (its own binary: a subscriber is set once per process).

#[test]
fn without_dfut_log_warnings_show_and_info_does_not() {
    if std::env::var_os("DFUT_LOG").is_some() {
        eprintln!("DFUT_LOG is set here; the default is not what runs");
        return;
    }
    dfut::init_tracing();
    assert!(tracing::enabled!(tracing::Level::WARN));
    assert!(tracing::enabled!(tracing::Level::ERROR));
    assert!(!tracing::enabled!(tracing::Level::INFO));
}
