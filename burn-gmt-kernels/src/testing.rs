//! Hooks for tests only (compiled for this crate's tests and with the `testing` feature,
//! never in a normal build): they force the way a selection goes, so that tests can check
//! every way against the same reference on any backend, and stand in for a build without a
//! backend's feature.

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

/// Runs `f` with the backend of cargo feature `feature` (`"flex"`, `"ndarray"`, `"wgpu"`, ...)
/// answered as not built by [`check_backend`](crate::mask::check_backend) on this thread: lets
/// tests of dependent crates see what a build without that feature does, with the backend
/// still at hand.
pub fn with_backend_left_out<R>(feature: &'static str, f: impl FnOnce() -> R) -> R {
    crate::backend::with_left_out(feature, f)
}

/// Runs `f` with every per-tensor magnitude mask on this thread selected and written in one
/// read-write pass ([`mask::mask_smallest`](crate::mask::mask_smallest)), even where the
/// backend's default is to select, then mask: lets tests check both against each other.
pub fn with_one_pass_mask<R>(f: impl FnOnce() -> R) -> R {
    with_forced(Forced::OnePass, f)
}

/// Runs `f` with every per-tensor magnitude mask on this thread going through the one pass
/// ([`with_one_pass_mask`]) with a bracket that misses the way `miss` says: the pass must
/// still give the exact mask, from the input it kept intact. On a backend that defers its
/// work (a CubeCL device behind `Fusion`), read the results inside `f`: the mask runs when
/// they are read.
pub fn with_bracket_miss<R>(miss: BracketMiss, f: impl FnOnce() -> R) -> R {
    with_forced_miss(miss, f)
}

/// The kernel launches of this crate so far in the whole process (not Burn's own copies and
/// fills): a test takes the difference around what it measures, reading its results inside
/// (a `Fusion` device launches when they are read, from the thread that runs its queue), in a
/// test binary of its own or with no other test launching meanwhile. Always 0 without a
/// CubeCL backend.
pub fn kernel_launches() -> u64 {
    #[cfg(feature = "cube")]
    return crate::cube::launches();
    #[cfg(not(feature = "cube"))]
    0
}

/// The most gradients one batched launch of the last batched operation bound
/// ([`LIST_MAX_TENSORS`](crate::buffer::LIST_MAX_TENSORS), or fewer where the device binds
/// fewer buffers per kernel: 28 on wgpu over lavapipe, which allows 31), process-wide; 0
/// before any, and always without a CubeCL backend.
pub fn batched_tensors_per_launch() -> usize {
    #[cfg(feature = "cube")]
    return crate::cube::list_limit();
    #[cfg(not(feature = "cube"))]
    0
}
