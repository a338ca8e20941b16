//! A per-thread fast random generator for the hot path (percent rolls, errno choice, data
//! corruption). Not cryptographic, and need not be: it decides which operations fail.

use std::cell::RefCell;

use rand::SeedableRng;
use rand::rngs::SmallRng;

thread_local! {
    static FAST_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// Runs `f` with this thread's generator.
pub(crate) fn with_fast_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    FAST_RNG.with(|rng| f(&mut rng.borrow_mut()))
}
