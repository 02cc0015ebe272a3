//! [`MaskedModel`]: a model and its [`GradMask`] as one module that burn-train trains, with no
//! `TrainStep::optimize` to write by hand.

use burn::module::Module;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::GradMask;

/// A model with a [`GradMask`] in front of its optimizer: burn-train's `Learner` trains it as
/// it would train the model, and each optimizer step masks the gradients it accumulated
/// (`TrainStep::optimize` and `optimize_multi` call [`GradMask::step`] and
/// [`GradMask::step_multi`]). Forward and inference steps are the model's own.
///
/// The mask is a field of the module: burn-train's checkpoints save its step counter with the
/// model, so a resumed run masks as an uninterrupted one would, and every replica (DDP) has a
/// mask of its own. Parameter paths, which name the statistics and seed the random and HFT
/// draws, are the model's own (`layer.weight`, not `model.layer.weight`).
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::{Device, Tensor};
/// use burn::train::{InferenceStep, RegressionOutput, TrainOutput, TrainStep};
/// use burn_gmt::{GradMaskConfig, MaskedModel};
///
/// #[derive(Module, Debug)]
/// pub struct Regressor {
///     layer: Linear,
/// }
///
/// impl TrainStep for Regressor {
///     type Input = (Tensor<2>, Tensor<2>);
///     type Output = RegressionOutput;
///
///     fn step(&self, (x, y): Self::Input) -> TrainOutput<RegressionOutput> {
///         let output = self.layer.forward(x);
///         let loss = (output.clone() - y.clone()).powi_scalar(2).mean();
///         TrainOutput::new(self, loss.backward(), RegressionOutput { loss, output, targets: y })
///     }
/// }
/// # impl InferenceStep for Regressor {
/// #     type Input = (Tensor<2>, Tensor<2>);
/// #     type Output = RegressionOutput;
/// #     fn step(&self, (x, y): Self::Input) -> RegressionOutput {
/// #         let output = self.layer.forward(x);
/// #         let loss = (output.clone() - y.clone()).powi_scalar(2).mean();
/// #         RegressionOutput { loss, output, targets: y }
/// #     }
/// # }
///
/// let device = Device::default().autodiff();
/// let model = Regressor { layer: LinearConfig::new(8, 2).init(&device) };
/// let mask = GradMaskConfig::new(0.3).init().unwrap();
/// // What `Learner::new` takes in place of the model.
/// let masked = MaskedModel::new(model, mask);
/// assert_eq!(masked.mask().steps(), 0);
/// let (model, mask) = masked.into_parts();
/// # let _ = (model, mask);
/// ```
#[derive(Module, Debug)]
pub struct MaskedModel<M: Module> {
    model: M,
    mask: GradMask,
}

impl<M: Module> MaskedModel<M> {
    /// `model`, masked by `mask` at each optimizer step.
    pub fn new(model: M, mask: GradMask) -> Self {
        Self { model, mask }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The mask (its step counter and statistics).
    pub fn mask(&self) -> &GradMask {
        &self.mask
    }

    /// The model and the mask, apart.
    pub fn into_parts(self) -> (M, GradMask) {
        (self.model, self.mask)
    }

    /// The model, without its mask.
    pub fn into_model(self) -> M {
        self.model
    }
}

impl<M: TrainStep + Module> TrainStep for MaskedModel<M> {
    type Input = M::Input;
    type Output = M::Output;

    fn step(&self, item: Self::Input) -> TrainOutput<Self::Output> {
        // The gradients are keyed by parameter id: the model's own are this module's.
        self.model.step(item)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        let Self { model, mut mask } = self;
        let model = mask.step(optim, lr, model, grads);
        Self { model, mask }
    }

    fn optimize_multi(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: MultiGradientsParams,
    ) -> Self {
        let Self { model, mut mask } = self;
        let model = mask.step_multi(optim, lr, model, grads);
        Self { model, mask }
    }
}

impl<M: InferenceStep + Module> InferenceStep for MaskedModel<M> {
    type Input = M::Input;
    type Output = M::Output;

    fn step(&self, item: Self::Input) -> Self::Output {
        self.model.step(item)
    }
}
