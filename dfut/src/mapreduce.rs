//! Map-reduce on futures: a remote map per input, a tree reduction of the
//! results, and progress counts.
//!
//! Intermediate results stay on the workers that computed them; each
//! reduce call runs where its inputs are and receives them worker to worker.
//! Only the final value is fetched, and only if the caller asks.

use crate::combinators::{reduce_calls, tree_reduce};
use crate::data::Data;
use crate::future::DistFuture;
use crate::progress::Progress;

/// A map-reduce job's configuration.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// #[dfut::remote] fn square(x: u64) -> u64 { x * x }
/// #[dfut::remote] fn sum(parts: dfut::Many<u64>) -> u64 { parts.iter().sum() }
///
/// let job = dfut::MapReduce::new().fan_in(4).progress(false).run(1..=10u64, square, sum);
/// assert_eq!(job.result.get()?, 385);
/// job.progress.wait();
/// assert_eq!(job.progress.done(), 10 + dfut::reduce_calls(10, 4) as u64);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MapReduce {
    fan_in: usize,
    show_progress: bool,
    label: String,
}

impl Default for MapReduce {
    fn default() -> Self {
        Self {
            fan_in: 4,
            show_progress: true,
            label: "map-reduce".into(),
        }
    }
}

/// A running map-reduce job.
#[derive(Debug)]
#[non_exhaustive]
pub struct Job<M> {
    /// The final value, still on its worker.
    pub result: DistFuture<M>,
    /// Counts of the job's map and reduce tasks.
    pub progress: Progress,
}

impl MapReduce {
    /// Fan-in 4, progress bar on (when stderr is a terminal).
    pub fn new() -> Self {
        Self::default()
    }

    /// Inputs per reduce call (at least 2).
    pub fn fan_in(mut self, fan_in: usize) -> Self {
        self.fan_in = fan_in.max(2);
        self
    }

    /// Whether to draw a progress bar.
    pub fn progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    /// The progress bar's label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Submits one `map` call per input and a tree of `reduce` calls over
    /// their results; returns at once.
    pub fn run<I, M: Data>(
        &self,
        inputs: impl IntoIterator<Item = I>,
        mut map: impl FnMut(I) -> DistFuture<M>,
        mut reduce: impl FnMut(Vec<DistFuture<M>>) -> DistFuture<M>,
    ) -> Job<M> {
        let mapped: Vec<DistFuture<M>> = inputs.into_iter().map(&mut map).collect();
        let total = mapped.len() + reduce_calls(mapped.len(), self.fan_in);
        let progress = Progress::new(total as u64, &self.label, self.show_progress);
        for f in &mapped {
            progress.track(f);
        }
        let tracker = progress.clone();
        let result = tree_reduce(mapped, self.fan_in, |group| {
            let f = reduce(group);
            tracker.track(&f);
            f
        });
        Job { result, progress }
    }
}
