//! GMT on a LoRA-adapted model (`Module::apply_lora`, burn 0.22): only the adapter factors
//! have gradients, so only they are masked and counted; the frozen bases never move.

use crate::common;

use crate::common::{reference_mask, seeded_linear, uniform, values};
use burn::module::{Lora, Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use burn_gmt::{GradMaskConfig, MaskTarget, WithGradMask};

#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    out: Linear,
}

const RANK: usize = 2;

fn lora_net(device: &Device) -> Net {
    Net {
        hidden: seeded_linear(6, 12, 10, device),
        out: seeded_linear(12, 3, 20, device),
    }
    .apply_lora(Lora::new(RANK, 4.0))
}

fn grads(net: &Net, step: u64, device: &Device) -> GradientsParams {
    let input = |seed, n: usize, width: usize| {
        let v: Vec<f32> = (0..(n * width) as u64)
            .map(|i| uniform(seed + step, i, 1.0))
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [n, width]), device)
    };
    let output = net.out.forward(net.hidden.forward(input(1, 8, 6)).tanh());
    let loss = (output - input(100, 8, 3)).powi_scalar(2).mean();
    GradientsParams::from_grads(loss.backward(), net)
}

/// Every float parameter: its module path, whether it trains, and its values.
fn params(net: &Net) -> Vec<(String, bool, Vec<f64>)> {
    struct Read(Vec<String>, Vec<(String, bool, Vec<f64>)>);
    impl ModuleVisitor for Read {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let trains = value.is_require_grad();
            self.1.push((self.0.join("."), trains, values(value)));
        }
    }
    let mut read = Read(Vec::new(), Vec::new());
    net.visit(&mut read);
    read.1
}

/// The module-level mask sees the four adapter factors only, masks each against a host sort,
/// and counts nothing of the frozen weights and biases, which never move (weight decay
/// included) while the adapters train.
#[test]
fn grad_mask_masks_only_the_adapters() {
    let device = Device::flex().autodiff();
    for target in [MaskTarget::Gradient, MaskTarget::Update] {
        let mut net = lora_net(&device);
        let before = params(&net);
        let adapters: Vec<&(String, bool, Vec<f64>)> =
            before.iter().filter(|(_, trains, _)| *trains).collect();
        let paths: Vec<&str> = adapters.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "hidden.weight.lora.a",
                "hidden.weight.lora.b",
                "out.weight.lora.a",
                "out.weight.lora.b"
            ]
        );
        let adapter_entries = (6 * RANK + RANK * 12 + 12 * RANK + RANK * 3) as u64;

        let mut mask = GradMaskConfig::new(0.5).with_target(target).init().unwrap();
        let mut optim = AdamWConfig::new().with_weight_decay(0.1).init();
        for step in 0..4 {
            let g = grads(&net, step, &device);
            assert_eq!(g.len(), 4, "only the adapters have gradients");
            // What the mask does to each adapter's gradient, against a host sort.
            let raw: Vec<Vec<f64>> = paths
                .iter()
                .map(|p| {
                    let id = net_param_id(&net, p);
                    values(g.get::<2>(id).unwrap())
                })
                .collect();
            let mut check = GradMaskConfig::new(0.5).init().unwrap();
            let mut masked = check.apply(&net, grads(&net, step, &device));
            for (p, raw) in paths.iter().zip(&raw) {
                let got = values(masked.remove::<2>(net_param_id(&net, p)).unwrap());
                common::assert_same(&got, &reference_mask(raw, 0.5).0, p);
            }
            net = mask.step(&mut optim, 1e-2, net, g);
            let stats = mask.last_stats();
            let names: Vec<&str> = stats.tensors.iter().map(|t| t.param.as_str()).collect();
            assert_eq!(names, paths);
            assert_eq!(stats.total(), adapter_entries);
        }
        for ((path, trains, old), (_, _, new)) in before.iter().zip(&params(&net)) {
            match trains {
                false => assert_eq!(old, new, "{target:?}: frozen {path} moved"),
                true => assert_ne!(old, new, "{target:?}: adapter {path} did not train"),
            }
        }
    }
}

/// The optimizer wrapper on the same model: it is only ever handed the adapters.
#[test]
fn wrapper_masks_only_the_adapters() {
    let device = Device::flex().autodiff();
    let mut net = lora_net(&device);
    let before = params(&net);
    let masked = AdamWConfig::new()
        .with_weight_decay(0.1)
        .build()
        .with_grad_mask(0.5)
        .with_param_paths(&net);
    let stats = masked.stats_handle();
    let mut optim = ModuleOptimizer::from(masked);
    for step in 0..3 {
        net = optim.step(1e-2, net.clone(), grads(&net, step, &device));
    }
    let latest = stats.latest();
    assert_eq!(latest.tensors.len(), 4);
    // Named by path: exactly the trainable parameters (the adapters), in the module's order.
    let adapters: Vec<&str> = before
        .iter()
        .filter(|(_, trains, _)| *trains)
        .map(|(path, _, _)| path.as_str())
        .collect();
    let names: Vec<&str> = latest.tensors.iter().map(|t| t.param.as_str()).collect();
    assert_eq!(names, adapters);
    assert_eq!(
        latest.total(),
        (6 * RANK + RANK * 12 + 12 * RANK + RANK * 3) as u64
    );
    for ((path, trains, old), (_, _, new)) in before.iter().zip(&params(&net)) {
        if !trains {
            assert_eq!(old, new, "frozen {path} moved");
        }
    }
}

/// The id of the parameter at `path`.
fn net_param_id(net: &Net, path: &str) -> burn::module::ParamId {
    struct Find<'a>(Vec<String>, &'a str, Option<burn::module::ParamId>);
    impl ModuleVisitor for Find<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.join(".") == self.1 {
                self.2 = Some(param.id);
            }
        }
    }
    let mut find = Find(Vec::new(), path, None);
    net.visit(&mut find);
    find.2.expect("a parameter at this path")
}
