//! A gradient on a backend this build does not serve: every front door refuses it before any
//! kernel runs, naming the cargo feature to turn on. The test build has every backend it can
//! make compiled in, so the kernels' test hook stands in for a build without Flex's feature.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor};
use burn_gmt::{GradMaskConfig, GradMaskError, WithGradMask};
use burn_gmt_kernels::testing::with_backend_left_out;

#[derive(Module, Debug)]
struct Model {
    layer: Linear,
}

fn model_and_grads() -> (Model, GradientsParams) {
    let device = Device::flex().autodiff();
    let model = Model {
        layer: LinearConfig::new(6, 4).init(&device),
    };
    let x = Tensor::<2>::random([3, 6], Distribution::Default, &device);
    let grads = GradientsParams::from_grads(model.layer.forward(x).sum().backward(), &model);
    (model, grads)
}

/// What `f` panicked with.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("a panic");
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload.downcast_ref::<&str>().unwrap().to_string(),
    }
}

const REMEDY: &str = "turn on burn-gmt's `flex` cargo feature";

#[test]
fn grad_mask_returns_an_error_naming_the_feature() {
    let (model, grads) = model_and_grads();
    let mut mask = GradMaskConfig::new(0.3).init().unwrap();
    let refused = with_backend_left_out("flex", || mask.try_apply(&model, grads));
    let Err(err) = refused else {
        panic!("a gradient on a backend left out was masked");
    };
    assert_eq!(
        err,
        GradMaskError::BackendNotBuilt {
            param: "layer.weight".into(),
            backend: "Flex",
            feature: Some("flex"),
        }
    );
    assert!(err.to_string().ends_with(REMEDY), "{err}");
    // Refused before anything ran: no step counted, no statistics.
    assert_eq!(mask.steps(), 0);
    assert!(mask.last_stats().tensors.is_empty());

    // The same mask serves the backend once it is built in.
    let (model, grads) = model_and_grads();
    mask.try_apply(&model, grads).unwrap();
    assert_eq!(mask.steps(), 1);
}

#[test]
fn grad_mask_step_panics_with_the_error() {
    let (model, grads) = model_and_grads();
    let mut mask = GradMaskConfig::new(0.3).init().unwrap();
    let mut optim = SgdConfig::new().init();
    let message = panic_message(|| {
        with_backend_left_out("flex", || {
            mask.step(&mut optim, 0.1, model, grads);
        })
    });
    assert!(
        message.contains("Flex backend") && message.ends_with(REMEDY),
        "{message}"
    );
    assert_eq!(mask.steps(), 0);
}

#[test]
fn the_wrapper_panics_with_the_error_before_masking() {
    let (model, grads) = model_and_grads();
    let masked = SgdConfig::new().build().with_grad_mask(0.3);
    let stats = masked.stats_handle();
    let mut optim = ModuleOptimizer::from(masked);
    let message = panic_message(|| {
        with_backend_left_out("flex", || {
            optim.step(0.1, model, grads);
        })
    });
    assert!(
        message.contains("Flex backend") && message.ends_with(REMEDY),
        "{message}"
    );
    assert!(stats.latest().tensors.is_empty());
}

#[test]
fn select_kth_abs_panics_with_the_error() {
    let grad = Tensor::<1>::from_floats([0.5, -3.0, 0.0], &Device::flex());
    let message = panic_message(|| {
        with_backend_left_out("flex", || {
            burn_gmt::select_kth_abs(&grad, 1);
        })
    });
    assert!(message.ends_with(REMEDY), "{message}");
    // Another backend left out leaves Flex served.
    let served = with_backend_left_out("ndarray", || burn_gmt::select_kth_abs(&grad, 1));
    assert_eq!(served, Some(0.5));
}
