//! The worker program of the criterion benches: links the bench functions
//! and serves them.

use dfut_benches as _;

fn main() -> dfut::Result<()> {
    let _rt = dfut::init()?;
    Ok(())
}
