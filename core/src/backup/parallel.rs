//! Chunk work spread over a few threads: compression and hashing dominate a backup's and a
//! restore's time, and each chunk is independent.

/// Applies `f` to every item on up to `threads` scoped threads; results keep the items' order.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        // Signals stay on the calling thread (PostgreSQL's handlers run there only).
        let handles: Vec<_> = crate::threads::with_signals_blocked(|| {
            items
                .chunks(per)
                .map(|part| {
                    let f = &f;
                    scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())
                })
                .collect()
        });
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// How many threads chunk work uses by default: the machine's cores, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(1)
}
