//! Hooks for tests only (compiled for this crate's tests and with the `testing` feature,
//! never in a normal build): they force the way a selection goes, so that tests can check
//! every way against the same reference on any backend.

pub use crate::host::BracketMiss;
use crate::select::route::{Forced, with_forced, with_forced_miss};

/// Runs `f` with every selection on this thread going through the device steps, even on a
/// CPU backend (where they run through the host bodies of [`MaskOps`](crate::MaskOps)): lets
/// tests check the on-device driver against the same reference everywhere.
pub fn with_device_select<R>(f: impl FnOnce() -> R) -> R {
    with_forced(Forced::DeviceSteps, f)
}

/// Runs `f` with every selection on this thread going through radix passes (the device
/// steps where the backend has them, the host passes elsewhere), even for inputs a one-step
/// or bracket selection would take: lets tests check every way against the same reference.
pub fn with_radix_select<R>(f: impl FnOnce() -> R) -> R {
    with_forced(Forced::Radix, f)
}

/// Runs `f` with every per-tensor magnitude mask on this thread selected and written in one
/// read-write pass ([`mask::mask_smallest`](crate::mask::mask_smallest)), even where the
/// backend's default is to select, then mask: lets tests check both against each other.
pub fn with_one_pass_mask<R>(f: impl FnOnce() -> R) -> R {
    with_forced(Forced::OnePass, f)
}

/// Runs `f` with every per-tensor magnitude mask on this thread going through the one pass
/// ([`with_one_pass_mask`]) with a bracket that misses the way `miss` says: the pass must
/// still give the exact mask, from the input it kept intact.
pub fn with_bracket_miss<R>(miss: BracketMiss, f: impl FnOnce() -> R) -> R {
    with_forced_miss(miss, f)
}
