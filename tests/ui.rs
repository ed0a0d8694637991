//! Compile-time behaviour of `#[dfut::remote]`: unsupported signatures fail
//! with a clear message on the offending span (checked-in `.stderr`
//! files; regenerate with `TRYBUILD=overwrite`), and supported shapes,
//! including hostile surroundings, compile and run.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
