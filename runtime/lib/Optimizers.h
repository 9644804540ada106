//===- Optimizers.h - One parameter's optimizer step ------------*- C++ -*-===//
//
// The update of one parameter by tamoe_rt_sgd and tamoe_rt_adam, written
// once for the cpu backend's loops and the cuda backend's kernels.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_OPTIMIZERS_H
#define TAMOE_RT_LIB_OPTIMIZERS_H

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define TAMOE_HD __host__ __device__
#else
#define TAMOE_HD
#endif

namespace tamoe_rt {

/// PyTorch's SGD (no dampening, no Nesterov); without a velocity buffer
/// the step is the gradient itself (momentum 0).
TAMOE_HD inline void sgdStep(float &param, float grad, float *velocity,
                             float lr, float momentum, float weightDecay) {
  float g = grad + weightDecay * param;
  if (velocity)
    g = *velocity = momentum * *velocity + g;
  param -= lr * g;
}

/// Adam with bias correction and decoupled weight decay (PyTorch's AdamW),
/// step `step` >= 1.
struct AdamStep {
  AdamStep(int64_t step, float lr, float beta1, float beta2, float eps,
           float weightDecay)
      : lr(lr), beta1(beta1), beta2(beta2), eps(eps), weightDecay(weightDecay),
        // In double, as PyTorch computes them.
        correction1(float(1.0 - std::pow(double(beta1), double(step)))),
        correction2(float(1.0 - std::pow(double(beta2), double(step)))) {}

  TAMOE_HD void operator()(float &param, float grad, float &m,
                           float &v) const {
    m = beta1 * m + (1.0f - beta1) * grad;
    v = beta2 * v + (1.0f - beta2) * (grad * grad);
    float update = (m / correction1) / (sqrtf(v / correction2) + eps);
    param -= lr * (weightDecay * param + update);
  }

  float lr, beta1, beta2, eps, weightDecay, correction1, correction2;
};

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_OPTIMIZERS_H
