//! Object lifetime: results are freed on their workers once every handle
//! to them is gone.

use dfut_tests::*;

use crate::util::{LIMIT, cluster, eventually};

fn objects_held(rt: &dfut::Runtime) -> u64 {
    rt.client().workers().iter().map(|w| w.load.objects).sum()
}

#[test]
fn results_are_freed_when_their_handles_drop() {
    let rt = cluster(2);
    let _g = rt.enter();
    let large: Vec<_> = (0..20).map(|i| bytes(100_000, i)).collect();
    let small: Vec<_> = (0..20).map(echo).collect();
    let mut chain = inc(0);
    for _ in 0..20 {
        chain = inc(chain);
    }
    for f in &large {
        assert_eq!(f.get_timeout(LIMIT).map(|v| v.len()), Ok(100_000));
    }
    for f in &small {
        assert!(f.get_timeout(LIMIT).is_ok());
    }
    assert_eq!(chain.get_timeout(LIMIT), Ok(21));
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 41),
        "workers report the objects they hold: {}",
        objects_held(&rt)
    );
    let clone = large[0].clone();
    drop(large);
    drop(small);
    drop(chain);
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 1),
        "only the object with a live clone remains: {}",
        objects_held(&rt)
    );
    assert_eq!(clone.get_timeout(LIMIT).map(|v| v[0]), Ok(0));
    drop(clone);
    assert!(eventually(LIMIT, || objects_held(&rt) == 0));
    assert_eq!(rt.client().owned_objects(), 0);
}
