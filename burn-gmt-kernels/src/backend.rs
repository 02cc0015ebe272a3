//! Which of Burn's backends this build serves, asked of a device at run time.
//!
//! `#[backend_extension]` routes a [`MaskOps`](crate::MaskOps) call only to the backends listed
//! for it in this build, each behind this crate's cargo feature; a tensor of any other backend
//! Burn was built with reaches the macro's `unimplemented!` arm. [`check_backend`] answers
//! first, from the device's id, so that a caller refuses such a gradient with an error naming
//! the feature to turn on, before any kernel runs.
//!
//! LibTorch and Burn's remote backend are not served: the macro routes to them only from a
//! crate built with Burn's `tch` or `remote` feature (its generated arm names the backend's
//! type), which would pull libtorch or a network stack into burn-gmt's build for the host
//! bodies alone.

use std::fmt;

use burn::backend::{DeviceOps, DispatchDeviceId};
use burn::tensor::Device;

/// A backend this build of burn-gmt does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendNotBuilt {
    /// The backend, as Burn names it (`Cube (cuda)`, `LibTorch`, ...).
    pub backend: &'static str,
    /// The cargo feature (of burn-gmt, and of this crate) that serves it, when one does.
    pub feature: Option<&'static str>,
}

impl fmt::Display for BackendNotBuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.feature {
            Some(feature) => write!(
                f,
                "Burn's {} backend is left out of this build (cargo feature `{feature}`)",
                self.backend
            ),
            None => write!(
                f,
                "Burn's {} backend has no cargo feature here",
                self.backend
            ),
        }
    }
}

impl std::error::Error for BackendNotBuilt {}

/// Whether this build serves the backend of `device` (the device of a gradient about to be
/// masked); the error names the cargo feature that would.
pub fn check_backend(device: &Device) -> Result<(), BackendNotBuilt> {
    let backend = classify(device.as_dispatch().id().type_id);
    #[cfg(any(test, feature = "testing"))]
    if left_out(backend.feature) {
        return Err(backend.not_built());
    }
    match backend.built {
        true => Ok(()),
        false => Err(backend.not_built()),
    }
}

/// A backend as a device id names it, and whether this build lists it for [`MaskOps`](crate::MaskOps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backend {
    name: &'static str,
    feature: Option<&'static str>,
    built: bool,
}

impl Backend {
    fn not_built(self) -> BackendNotBuilt {
        BackendNotBuilt {
            backend: self.name,
            feature: self.feature,
        }
    }
}

/// burn-dispatch keeps the backend (`DispatchDeviceId`) in the high byte of a device's type id.
const DISPATCH_BACKEND_SHIFT: u16 = 8;
/// cubecl keeps the runtime (`cubecl::RuntimeId`) in bits 5..8 of a device's type id.
const CUBE_RUNTIME_SHIFT: u16 = 5;
const CUBE_RUNTIME_MASK: u16 = 0b111;

/// The backend a device's type id names (burn-dispatch's encoding; for CubeCL, cubecl's
/// runtime tag below it). Each `built` is the condition its arm of the `MaskOps` extension
/// is compiled under (`ops.rs`).
fn classify(type_id: u16) -> Backend {
    let backend = |name, feature, built| Backend {
        name,
        feature,
        built,
    };
    let cube = cfg!(feature = "cube");
    match type_id >> DISPATCH_BACKEND_SHIFT {
        id if id == DispatchDeviceId::Flex as u16 => {
            backend("Flex", Some("flex"), cfg!(feature = "flex"))
        }
        id if id == DispatchDeviceId::NdArray as u16 => {
            backend("NdArray", Some("ndarray"), cfg!(feature = "ndarray"))
        }
        // Every CubeCL runtime is the one `Cube` backend, served by the same kernels.
        id if id == DispatchDeviceId::Cube as u16 => {
            match (type_id >> CUBE_RUNTIME_SHIFT) & CUBE_RUNTIME_MASK {
                0 => backend("Cube (cuda)", Some("cuda"), cube),
                1 => backend("Cube (rocm)", Some("rocm"), cube),
                2 => backend("Cube (metal)", Some("metal"), cube),
                3 => backend("Cube (wgpu)", Some("wgpu"), cube),
                // No feature of its own (cubecl-cpu downloads LLVM at build time); another
                // CubeCL feature compiles the kernels it would run.
                4 => backend("Cube (cpu)", None, cube),
                _ => backend("Cube", None, cube),
            }
        }
        id if id == DispatchDeviceId::LibTorch as u16 => backend("LibTorch", None, false),
        id if id == DispatchDeviceId::Remote as u16 => backend("Remote", None, false),
        id if id == DispatchDeviceId::Capture as u16 => backend("Capture", None, false),
        _ => backend("unknown", None, false),
    }
}

#[cfg(any(test, feature = "testing"))]
thread_local! {
    static LEFT_OUT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the backend of cargo feature `feature` answered as not built on this thread
/// (restored after `f`, even when it panics).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn with_left_out<R>(feature: &'static str, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<&'static str>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEFT_OUT.set(self.0);
        }
    }
    let _restore = Restore(LEFT_OUT.replace(Some(feature)));
    f()
}

#[cfg(any(test, feature = "testing"))]
fn left_out(feature: Option<&'static str>) -> bool {
    feature.is_some() && LEFT_OUT.get() == feature
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(backend: DispatchDeviceId, low: u16) -> u16 {
        ((backend as u16) << DISPATCH_BACKEND_SHIFT) | low
    }

    /// The devices this test build makes are served, and named from their real ids.
    #[test]
    fn devices_of_this_build_are_served() {
        #[cfg(feature = "flex")]
        {
            assert_eq!(check_backend(&Device::flex()), Ok(()));
            let id = Device::flex().as_dispatch().id().type_id;
            assert_eq!(classify(id).name, "Flex");
            // An autodiff device names its inner backend.
            let id = Device::flex().autodiff().as_dispatch().id().type_id;
            assert_eq!(classify(id).name, "Flex");
        }
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        {
            assert_eq!(check_backend(&Device::ndarray()), Ok(()));
            let id = Device::ndarray().as_dispatch().id().type_id;
            assert_eq!(classify(id).name, "NdArray");
        }
    }

    /// The runtime tag read here is cubecl's own encoding of each runtime.
    #[cfg(feature = "cube")]
    #[test]
    fn cube_runtimes_are_read_as_cubecl_writes_them() {
        use cubecl::RuntimeId;
        use cubecl::device::DeviceId;
        let runtimes = [
            (RuntimeId::Cuda, "Cube (cuda)", Some("cuda")),
            (RuntimeId::Hip, "Cube (rocm)", Some("rocm")),
            (RuntimeId::Metal, "Cube (metal)", Some("metal")),
            (RuntimeId::Wgpu, "Cube (wgpu)", Some("wgpu")),
            (RuntimeId::Cpu, "Cube (cpu)", None),
        ];
        for (runtime, name, feature) in runtimes {
            let low = runtime.stamp(DeviceId::new(3, 0)).type_id;
            let backend = classify(id_of(DispatchDeviceId::Cube, low));
            assert_eq!(
                (backend.name, backend.feature, backend.built),
                (name, feature, true)
            );
        }
    }

    /// Backends no burn-gmt feature serves are refused, named, with no feature to offer.
    #[test]
    fn backends_outside_the_build_are_named() {
        for (backend, name) in [
            (DispatchDeviceId::LibTorch, "LibTorch"),
            (DispatchDeviceId::Remote, "Remote"),
            (DispatchDeviceId::Capture, "Capture"),
        ] {
            let found = classify(id_of(backend, 1));
            assert_eq!(
                found,
                Backend {
                    name,
                    feature: None,
                    built: false
                }
            );
            let message = found.not_built().to_string();
            assert_eq!(
                message,
                format!("Burn's {name} backend has no cargo feature here")
            );
        }
        let cuda = classify(id_of(DispatchDeviceId::Cube, 0));
        assert_eq!(cuda.built, cfg!(feature = "cube"));
        assert_eq!(
            cuda.not_built().to_string(),
            "Burn's Cube (cuda) backend is left out of this build (cargo feature `cuda`)"
        );
    }

    /// A backend left out (the test hook standing for a build without its feature) is refused
    /// with its feature named; other backends are not.
    #[cfg(feature = "flex")]
    #[test]
    fn a_left_out_backend_names_its_feature() {
        let refused = with_left_out("flex", || check_backend(&Device::flex()));
        let expected = BackendNotBuilt {
            backend: "Flex",
            feature: Some("flex"),
        };
        assert_eq!(refused, Err(expected));
        assert_eq!(
            with_left_out("ndarray", || check_backend(&Device::flex())),
            Ok(())
        );
        assert_eq!(check_backend(&Device::flex()), Ok(()));
    }
}
