//! Errors of the gradient mask.

/// Why a gradient mask could not be built or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GradMaskError {
    /// A configuration field holds an invalid value.
    #[error("invalid GradMaskConfig.{field}: {reason}")]
    InvalidField {
        /// The field, as named in [`GradMaskConfig`](crate::GradMaskConfig).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration cannot run where it was used.
    #[error("GradMaskConfig.{field} = {value} is not supported here: {reason}")]
    Unsupported {
        /// The field, as named in [`GradMaskConfig`](crate::GradMaskConfig).
        field: &'static str,
        /// Its value.
        value: String,
        /// What to use instead.
        reason: &'static str,
    },
    /// A gradient lives on a backend this build of burn-gmt does not serve (its cargo feature
    /// left off while Burn's is on, or a backend burn-gmt has no feature for): refused at the
    /// first mask, before any kernel runs.
    #[error(
        "gradient of parameter {param} is on Burn's {backend} backend, which this build of burn-gmt does not serve: {}",
        backend_remedy(.feature)
    )]
    BackendNotBuilt {
        /// The parameter's path or id.
        param: String,
        /// The backend, as Burn names it (`Cube (cuda)`, `LibTorch`, ...).
        backend: &'static str,
        /// burn-gmt's cargo feature that serves it, when one does.
        feature: Option<&'static str>,
    },
    /// The optimizer wrapper was named ([`GradMasked::with_param_paths`](crate::GradMasked::with_param_paths))
    /// for another number of parameters than it stepped at its first step, so its statistics
    /// would carry other parameters' names: it steps a group of them
    /// (`ModuleOptimizer::with_group`; name it with
    /// [`GradMasked::with_group_paths`](crate::GradMasked::with_group_paths)), or a parameter
    /// had no gradient at the first step.
    #[error(
        "GradMasked was named for {named} trainable parameters but stepped {stepped} at its first step, so its statistics would carry other parameters' names: under ModuleOptimizer::with_group, name it with GradMasked::with_group_paths(&model, &group) (the fallback optimizer's group is ParamGroup::all().exclude(..) of the others); otherwise a parameter had no gradient at the first step"
    )]
    ParamPathsMismatch {
        /// Parameters the wrapper was named for.
        named: usize,
        /// Parameters it stepped at its first step.
        stepped: u64,
    },
    /// A gradient has a dtype the mask cannot rank (quantized, or not a float).
    #[error(
        "gradient of parameter {param} has dtype {dtype}, which gradient masking does not support (use f32, f64, f16 or bf16)"
    )]
    UnsupportedDType {
        /// The parameter's path or id.
        param: String,
        /// The dtype.
        dtype: String,
    },
    /// A gradient's dtype is one the mask ranks, but its device does not compute with it (for
    /// example f16 on a GPU without shader f16 support).
    #[error(
        "gradient of parameter {param} has dtype {dtype}, which its device {device} does not compute with; train in a dtype the device supports (Device::supports_dtype)"
    )]
    DTypeNotOnDevice {
        /// The parameter's path or id.
        param: String,
        /// The dtype.
        dtype: String,
        /// The device.
        device: String,
    },
}

/// What to do about a backend burn-gmt does not serve.
fn backend_remedy(feature: &Option<&'static str>) -> String {
    match feature {
        Some(feature) => format!("turn on burn-gmt's `{feature}` cargo feature"),
        None => "burn-gmt has no cargo feature for it; it serves Flex, NdArray and CubeCL (features `flex`, `ndarray`, `wgpu`, `vulkan`, `metal`, `webgpu`, `cuda`, `rocm`)".into(),
    }
}
