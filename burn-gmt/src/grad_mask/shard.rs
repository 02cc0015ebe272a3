//! A multi-device step's gradients: each parameter's summed on the device burn-optim steps it
//! on (its home), masked there, and handed back on that device alone.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, MultiGradientsParams};
use burn::tensor::{Device, Tensor};

/// The gradients of a multi-device step, each parameter's summed on its home device.
pub(super) struct Sharded {
    pub sums: GradientsParams,
    pub homes: Homes,
}

/// The devices of a multi-device step, and which of them is each parameter's home.
pub(super) struct Homes {
    devices: Vec<Device>,
    home: HashMap<ParamId, usize>,
}

impl Sharded {
    /// Sums each parameter's gradients where burn-optim's [`MultiGradientsParams::remove`]
    /// does: on the device it picks for that parameter (its home).
    pub fn sum_on_home<M: Module>(module: &M, mut multi: MultiGradientsParams) -> Self {
        struct Sum<'a> {
            multi: &'a mut MultiGradientsParams,
            sums: GradientsParams,
            home: HashMap<ParamId, usize>,
        }
        impl ModuleVisitor for Sum<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some((grad, device)) = self.multi.remove::<D>(param.id) {
                    let home = self
                        .multi
                        .grads
                        .iter()
                        .position(|(_, d)| *d == device)
                        .expect("burn-optim sums a gradient on one of the step's devices");
                    self.home.insert(param.id, home);
                    self.sums.register::<D>(param.id, grad);
                }
            }
        }
        let mut sum = Sum {
            multi: &mut multi,
            sums: GradientsParams::new(),
            home: HashMap::new(),
        };
        module.visit(&mut sum);
        let Sum { sums, home, .. } = sum;
        let devices = multi.grads.into_iter().map(|(_, device)| device).collect();
        Self {
            sums,
            homes: Homes { devices, home },
        }
    }
}

impl Homes {
    /// Hands each (masked) gradient back on its home device alone, where `step_multi` finds
    /// it and steps the parameter as it would have.
    pub fn send_home<M: Module>(
        self,
        module: &M,
        mut grads: GradientsParams,
    ) -> MultiGradientsParams {
        struct Send<'a> {
            grads: &'a mut GradientsParams,
            home: &'a HashMap<ParamId, usize>,
            out: &'a mut MultiGradientsParams,
        }
        impl ModuleVisitor for Send<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let (Some(&home), Some(grad)) =
                    (self.home.get(&param.id), self.grads.remove::<D>(param.id))
                {
                    self.out.grads[home].0.register::<D>(param.id, grad);
                }
            }
        }
        let mut out = MultiGradientsParams {
            grads: self
                .devices
                .into_iter()
                .map(|device| (GradientsParams::new(), device))
                .collect(),
        };
        module.visit(&mut Send {
            grads: &mut grads,
            home: &self.home,
            out: &mut out,
        });
        out
    }
}
