//! Hooks for tests only (compiled for this crate's tests and with the `testing` feature,
//! never in a normal build): they force the way a selection goes, so that tests can check
//! every way against the same reference on any backend, and stand in for a build without a
//! backend's feature.

use crate::select::route::{Forced, with_forced};

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
