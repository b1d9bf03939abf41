//! Independent work on several servers at once.
//!
//! Each server has its own lock and record, so starting three of them need
//! not wait for each start in turn: the caller then waits for the slowest
//! start, not for their sum. Only for work that waits (a start waits for
//! the watcher and the start-up check): a join takes microseconds, less
//! than waking a thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

/// At most this many threads besides the caller's.
const MAX_HELPERS: usize = 15;

/// The stack of a worker thread (here, and the Neovim module's join
/// thread). The work needs a few KiB; Rust's default of 2 MiB costs
/// measurably more to set up: about 4.5% of Neovim's start-up with the
/// plugin's join thread (doc/PERFORMANCE.md, row 3), where 1 MiB was as
/// slow as 2 MiB.
pub(crate) const WORKER_STACK: usize = 256 * 1024;

/// `work` applied to every item, the answers in the items' order: on the
/// calling thread and up to one helper thread per further item. A thread
/// that cannot be made is simply not there (the others take its share),
/// and an item whose work panics answers `None` while the others finish.
pub fn each<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    // Each thread takes the next item until none is left.
    let drain = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, catch_unwind(AssertUnwindSafe(|| work(item))).ok()));
        }
    };
    let helpers = items.len().saturating_sub(1).min(MAX_HELPERS);
    let mut answers: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..helpers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(scope, drain)
                    .ok()
            })
            .collect();
        let mut all = drain();
        for t in threads {
            // A helper's own panic is caught per item above; join cannot fail.
            all.extend(t.join().unwrap_or_default());
        }
        for (i, answer) in all {
            answers[i] = answer;
        }
    });
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn answers_come_back_in_the_items_order() {
        let items: Vec<u32> = (0..40).collect();
        let got = each(&items, |&i| i * 2);
        assert_eq!(got, items.iter().map(|&i| Some(i * 2)).collect::<Vec<_>>());
        assert!(each(&[] as &[u32], |&i| i).is_empty());
    }

    #[test]
    fn the_items_run_at_the_same_time() {
        // Every item waits until all of them have begun: done in turn, the
        // first would wait for ever.
        let items = [0u8; 4];
        let all_begun = Barrier::new(items.len());
        let got = each(&items, |_| {
            all_begun.wait();
            true
        });
        assert_eq!(got, vec![Some(true); 4]);
    }

    #[test]
    fn a_panicking_item_answers_none_and_the_others_finish() {
        let items = [1, 0, 3];
        let got = each(&items, |&i| {
            if i == 0 {
                panic!("item panicked on purpose");
            }
            i
        });
        assert_eq!(got, vec![Some(1), None, Some(3)]);
    }
}
