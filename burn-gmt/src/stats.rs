//! What the mask did at the last step.

/// Mask statistics of one parameter tensor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorMaskStats {
    /// The parameter's module path (module-level mask) or stream number (optimizer wrapper).
    pub param: String,
    /// Entries in the gradient.
    pub total: u64,
    /// Entries masked (zeroed, or held still with [`MaskTarget::Update`](crate::MaskTarget)).
    pub masked: u64,
    /// Entries kept: `total - masked`. Ties at the threshold are all kept, so this can exceed
    /// `(1 - ratio) · total`.
    pub kept: u64,
    /// NaN or infinite entries; they are never masked.
    pub non_finite: u64,
    /// The magnitude threshold `T` (entries with `|g| < T` are masked), when the magnitude
    /// strategy selected one this step.
    pub threshold: Option<f64>,
}

/// Mask statistics of one optimizer step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaskStats {
    /// The optimizer step (0-based) these statistics describe.
    pub step: u64,
    /// The ratio in force at that step (after warm-up).
    pub ratio: f64,
    /// One entry per masked parameter tensor.
    pub tensors: Vec<TensorMaskStats>,
}

impl MaskStats {
    /// Entries over all tensors.
    pub fn total(&self) -> u64 {
        self.tensors.iter().map(|t| t.total).sum()
    }
    /// Masked entries over all tensors.
    pub fn masked(&self) -> u64 {
        self.tensors.iter().map(|t| t.masked).sum()
    }
    /// Kept entries over all tensors.
    pub fn kept(&self) -> u64 {
        self.tensors.iter().map(|t| t.kept).sum()
    }
    /// Non-finite entries over all tensors.
    pub fn non_finite(&self) -> u64 {
        self.tensors.iter().map(|t| t.non_finite).sum()
    }
    /// Fraction of entries kept (1 when there is nothing to mask).
    pub fn kept_fraction(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            1.0
        } else {
            self.kept() as f64 / total as f64
        }
    }
}
