//! Which way a selection goes, from what the gradients' backend says it does well
//! ([`MaskOps::selection_capabilities`]), never from a match on the device kind. Tests may
//! force a way ([`crate::testing`]); a normal build has no such hook to read.

use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::DType;

use crate::MaskOps;
use crate::element::key_bits;
use crate::host::BracketMiss;

/// The way a selection goes (see the [`select`](super) module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    OneStep,
    DeviceSteps,
    HostBracket,
    HostPasses,
}

/// A way of selecting that tests force on a thread.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forced {
    /// Through the device steps, even on a CPU backend (through its host bodies).
    DeviceSteps,
    /// Through radix passes, with no one-step or bracket shortcut.
    Radix,
    /// Per-tensor magnitude masks through the one read-write pass wherever the dtype allows,
    /// whatever the backend's default.
    OnePass,
}

#[cfg(any(test, feature = "testing"))]
thread_local! {
    static FORCED: std::cell::Cell<Option<Forced>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every selection on this thread going the way `forced` says.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn with_forced<R>(forced: Forced, f: impl FnOnce() -> R) -> R {
    let previous = FORCED.replace(Some(forced));
    let out = f();
    FORCED.set(previous);
    out
}

#[cfg(any(test, feature = "testing"))]
thread_local! {
    static FORCED_MISS: std::cell::Cell<Option<BracketMiss>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every one-pass mask on this thread given a bracket that misses as `miss`
/// says.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn with_forced_miss<R>(miss: BracketMiss, f: impl FnOnce() -> R) -> R {
    let previous = FORCED_MISS.replace(Some(miss));
    let out = f();
    FORCED_MISS.set(previous);
    out
}

/// The bracket miss tests forced on this thread, if any.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn forced_miss() -> Option<BracketMiss> {
    FORCED_MISS.get()
}

/// Nothing is forced outside tests.
#[cfg(not(any(test, feature = "testing")))]
#[inline(always)]
pub(crate) fn forced_miss() -> Option<BracketMiss> {
    None
}

/// Whether tests forced the device steps, and whether they ruled out the shortcuts.
#[cfg(any(test, feature = "testing"))]
fn forced() -> (bool, bool) {
    let forced = FORCED.get();
    (
        forced == Some(Forced::DeviceSteps),
        forced == Some(Forced::Radix),
    )
}

/// Nothing is forced outside tests.
#[cfg(not(any(test, feature = "testing")))]
#[inline(always)]
fn forced() -> (bool, bool) {
    (false, false)
}

/// The way `grads` (of `dtype`) are selected, from what their backend says it does well.
pub(crate) fn route(grads: &[DispatchTensor], dtype: DType) -> Route {
    let (device_steps, radix_only) = forced();
    let shortcut = !radix_only;
    if several_devices(grads) {
        return match shortcut && grads.iter().all(host_memory) {
            true => Route::HostBracket,
            false => Route::HostPasses,
        };
    }
    if device_steps {
        return Route::DeviceSteps;
    }
    let caps = <Dispatch as MaskOps>::selection_capabilities(&grads[0]);
    let total = total_entries(grads);
    let bits = key_bits(dtype).expect("selection on a supported float dtype");
    let on_device = bits <= caps.device_key_bits && total < caps.device_max_entries;
    if shortcut
        && grads.len() == 1
        && total <= caps.one_step_max_entries
        && (caps.host_memory || on_device)
    {
        Route::OneStep
    } else if on_device {
        Route::DeviceSteps
    } else if shortcut && caps.host_memory {
        Route::HostBracket
    } else {
        Route::HostPasses
    }
}

/// Whether `grad`'s `rank` smallest `|g|` are selected and masked in one read-write pass
/// ([`MaskOps::abs_key_mask_rank`]) rather than selected, then masked: the one place that
/// decides, from what the backend says it does
/// ([`SelectionCapabilities::one_pass_max_entries`](crate::SelectionCapabilities::one_pass_max_entries)).
/// Tests may force the one pass (also by forcing a bracket miss), or a selection route,
/// which takes the two passes.
/// Whether `grad`'s backend keeps its tensors in host memory
/// ([`SelectionCapabilities::host_memory`](crate::SelectionCapabilities::host_memory)).
pub(crate) fn host_memory(grad: &DispatchTensor) -> bool {
    <Dispatch as MaskOps>::selection_capabilities(grad).host_memory
}

pub(crate) fn one_pass(grad: &DispatchTensor) -> bool {
    let Some(bits) = key_bits(grad.dtype()) else {
        return false;
    };
    let caps = <Dispatch as MaskOps>::selection_capabilities(grad);
    // A device pass keeps its keys in the device's own width (f64 on a GPU goes the host way).
    if !caps.host_memory && bits > caps.device_key_bits {
        return false;
    }
    #[cfg(any(test, feature = "testing"))]
    match FORCED.get() {
        Some(Forced::OnePass) => return true,
        Some(_) => return false,
        None if forced_miss().is_some() => return true,
        None => {}
    }
    let entries = grad.shape().num_elements() as u64;
    (caps.one_pass_min_entries..=caps.one_pass_max_entries).contains(&entries)
}

/// Whether `grads` live on more than one device.
fn several_devices(grads: &[DispatchTensor]) -> bool {
    grads
        .windows(2)
        .any(|pair| pair[0].device() != pair[1].device())
}

/// The entries of `grads` in all.
pub(crate) fn total_entries(grads: &[DispatchTensor]) -> u64 {
    grads.iter().map(|g| g.shape().num_elements() as u64).sum()
}
