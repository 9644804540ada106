//===- Gradients.cpp - The C entry points of the backward and training ----===//
//
// The gradients of the layer's ops, the all-reduce of replicated
// parameters' gradients and the optimizer steps: argument checks in the
// style of Core.cpp (the backend checks the contents: ids, positions,
// counts), then the backend's primitive. tamoe_rt_all_reduce is the one
// collective: the group agrees on the verdict and on n and average first,
// so it fails on every rank alike.
//
//===----------------------------------------------------------------------===//

#include "Core.h"

using namespace tamoe_rt;

extern "C" {

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

tamoe_rt_status_t
tamoe_rt_gate_grad(tamoe_rt_context_t *context, const float *probs,
                   const int32_t *expert_ids, intptr_t tokens, intptr_t experts,
                   intptr_t k, tamoe_rt_score_t score, int32_t renormalize,
                   const float *d_weights, const float *d_probs,
                   float *d_logits) {
  const char *fn = "tamoe_rt_gate_grad";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.atLeast(tokens, 0, "tokens")
      .atLeast(experts, 1, "experts")
      .expertIds(experts)
      .topK(k, experts)
      .score(score)
      .floats(tokens, experts, "tokens * experts")
      .floats(tokens, k, "tokens * k")
      .that(d_weights || d_probs || tokens == 0,
            [] {
              return std::string(
                  "d_weights and d_probs are both null: no gradient to take");
            })
      .notNull(probs, "probs", tokens > 0)
      .notNull(expert_ids, "expert_ids", tokens > 0 && d_weights)
      .notNull(d_logits, "d_logits", tokens > 0);
  if (check.status.ok()) {
    intptr_t cells = product(tokens, experts), picks = product(tokens, k);
    check.apart({{d_logits, cells, 4, "d_logits"}},
                {{probs, cells, 4, "probs"},
                 {d_probs, cells, 4, "d_probs"},
                 {d_weights, picks, 4, "d_weights"},
                 {expert_ids, picks, 4, "expert_ids"}});
  }
  Status status = check.status;
  if (status.ok())
    status = context->backend->gateGrad(probs, expert_ids, tokens, experts, k,
                                        score, renormalize != 0, d_weights,
                                        d_probs, d_logits);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_combine_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype,
    const void *expert_outputs, intptr_t rows, intptr_t hidden,
    const int32_t *positions, const float *weights, intptr_t tokens, intptr_t k,
    const void *d_combined, void *d_expert_outputs, float *d_weights) {
  const char *fn = "tamoe_rt_combine_grad";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.dtype(dtype, "dtype")
      .atLeast(rows, 0, "rows")
      .atLeast(hidden, 1, "hidden")
      .atLeast(tokens, 0, "tokens")
      .atLeast(k, 1, "k")
      .floats(rows, hidden, "rows * hidden")
      .floats(tokens, hidden, "tokens * hidden")
      .floats(tokens, k, "tokens * k")
      .that(d_expert_outputs || d_weights || rows == 0 || tokens == 0,
            [] {
              return std::string("d_expert_outputs and d_weights are both "
                                 "null: nothing to compute");
            })
      .that(!d_weights || weights || tokens == 0,
            [] {
              return std::string("d_weights needs the forward call's weights "
                                 "(an unweighted sum has no weights to "
                                 "differentiate), but weights is null");
            })
      .notNull(expert_outputs, "expert_outputs", rows > 0 && d_weights)
      .notNull(positions, "positions", tokens > 0)
      .notNull(d_combined, "d_combined", tokens > 0);
  if (check.status.ok()) {
    intptr_t element = dtypeBytes(raw(dtype)), cells = product(rows, hidden),
             picks = product(tokens, k);
    check.apart({{d_expert_outputs, cells, element, "d_expert_outputs"},
                 {d_weights, picks, 4, "d_weights"}},
                {{expert_outputs, cells, element, "expert_outputs"},
                 {weights, picks, 4, "weights"},
                 {d_combined, product(tokens, hidden), element, "d_combined"},
                 {positions, picks, 4, "positions"}});
  }
  Status status = check.status;
  if (status.ok()) {
    F32Staging f32(*context->backend);
    const float *outputs = f32.in(dtype, expert_outputs, rows * hidden);
    const float *dIn = f32.in(dtype, d_combined, tokens * hidden);
    float *dOutputs = f32.out(dtype, d_expert_outputs, rows * hidden);
    status = f32.run([&] {
      return context->backend->combineGrad(outputs, rows, hidden, positions,
                                           weights, tokens, k, dIn, dOutputs,
                                           d_weights);
    });
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_grouped_matmul_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *rows,
    intptr_t rows_capacity, intptr_t hidden, const int32_t *counts,
    intptr_t num_counts, intptr_t experts, const void *weights,
    intptr_t out_features, const void *d_result, void *d_rows,
    void *d_weights) {
  const char *fn = "tamoe_rt_grouped_matmul_grad";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.dtype(dtype, "dtype")
      .groupedShape(rows_capacity, hidden, num_counts, experts, out_features)
      .that(d_rows || d_weights || rows_capacity == 0,
            [] {
              return std::string(
                  "d_rows and d_weights are both null: nothing to compute");
            })
      .notNull(rows, "rows", rows_capacity > 0 && d_weights)
      .notNull(counts, "counts", num_counts > 0)
      .notNull(weights, "weights", d_rows)
      .notNull(d_result, "d_result", rows_capacity > 0);
  if (check.status.ok()) {
    intptr_t element = dtypeBytes(raw(dtype)),
             rowCells = product(rows_capacity, hidden),
             weightCells = product(experts, product(hidden, out_features));
    check.apart(
        {{d_rows, rowCells, element, "d_rows"},
         {d_weights, weightCells, element, "d_weights"}},
        {{rows, rowCells, element, "rows"},
         {weights, weightCells, element, "weights"},
         {d_result, product(rows_capacity, out_features), element, "d_result"},
         {counts, num_counts, 4, "counts"}});
  }
  Status status = check.status;
  if (status.ok() && context->backend->takesRows(dtype)) {
    status = context->backend->groupedMatmulGradRows(
        dtype, rows, rows_capacity, hidden, counts, num_counts, experts,
        weights, out_features, d_result, d_rows, d_weights);
  } else if (status.ok()) {
    intptr_t weightElements = experts * hidden * out_features;
    F32Staging f32(*context->backend);
    const float *x = f32.in(dtype, rows, rows_capacity * hidden);
    const float *w = f32.in(dtype, weights, weightElements);
    const float *dy = f32.in(dtype, d_result, rows_capacity * out_features);
    float *dx = f32.out(dtype, d_rows, rows_capacity * hidden);
    float *dw = f32.out(dtype, d_weights, weightElements);
    status = f32.run([&] {
      return context->backend->groupedMatmulGrad(x, rows_capacity, hidden,
                                                 counts, num_counts, experts, w,
                                                 out_features, dy, dx, dw);
    });
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_aux_loss_grad(
    tamoe_rt_context_t *context, const int32_t *expert_ids,
    const int32_t *positions, intptr_t tokens, intptr_t experts, intptr_t k,
    const float *expert_weights, const float *d_loss, float *d_probs) {
  const char *fn = "tamoe_rt_aux_loss_grad";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.atLeast(tokens, 0, "tokens")
      .atLeast(experts, 1, "experts")
      .expertIds(experts)
      .topK(k, experts)
      .floats(tokens, experts, "tokens * experts")
      .fits(tokens, k, "tokens * k")
      .notNull(expert_ids, "expert_ids", tokens > 0)
      .notNull(d_loss, "d_loss")
      .notNull(d_probs, "d_probs", tokens > 0);
  if (check.status.ok())
    check.apart({{d_probs, product(tokens, experts), 4, "d_probs"}},
                {{expert_weights, experts, 4, "expert_weights"},
                 {d_loss, 1, 4, "d_loss"},
                 {expert_ids, product(tokens, k), 4, "expert_ids"},
                 {positions, product(tokens, k), 4, "positions"}});
  Status status = check.status;
  if (status.ok())
    status =
        context->backend->auxLossGrad(expert_ids, positions, tokens, experts, k,
                                      expert_weights, d_loss, d_probs);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_dedup_pack_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *d_unique,
    intptr_t unique_capacity, intptr_t hidden, const int32_t *expert_ids,
    const int32_t *positions, intptr_t num_tokens, intptr_t k,
    intptr_t experts_per_node, intptr_t nodes, void *d_tokens) {
  const char *fn = "tamoe_rt_dedup_pack_grad";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.dtype(dtype, "dtype")
      .packRouting(num_tokens, k, experts_per_node, nodes, expert_ids,
                   positions)
      .atLeast(unique_capacity, 0, "unique_capacity")
      .atLeast(hidden, 1, "hidden")
      .floats(unique_capacity, hidden, "unique_capacity * hidden")
      .floats(num_tokens, hidden, "num_tokens * hidden")
      .notNull(d_unique, "d_unique", unique_capacity > 0)
      .notNull(d_tokens, "d_tokens", num_tokens > 0);
  if (check.status.ok()) {
    intptr_t element = dtypeBytes(raw(dtype)),
             assignments = product(num_tokens, k);
    check.apart(
        {{d_tokens, product(num_tokens, hidden), element, "d_tokens"}},
        {{d_unique, product(unique_capacity, hidden), element, "d_unique"},
         {expert_ids, assignments, 4, "expert_ids"},
         {positions, assignments, 4, "positions"}});
  }
  Status status = check.status;
  if (status.ok()) {
    F32Staging f32(*context->backend);
    const float *dUnique = f32.in(dtype, d_unique, unique_capacity * hidden);
    float *dTokens = f32.out(dtype, d_tokens, num_tokens * hidden);
    status = f32.run([&] {
      return context->backend->dedupPackGrad(
          dUnique, unique_capacity, hidden, expert_ids, positions, num_tokens,
          k, experts_per_node, nodes, dTokens);
    });
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_dedup_expand_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *d_expanded,
    intptr_t expanded_capacity, intptr_t hidden, const int32_t *routes,
    intptr_t unique_capacity, intptr_t k, const int32_t *recv_counts,
    intptr_t nodes, intptr_t ranks_per_node, intptr_t experts_per_rank,
    void *d_unique) {
  const char *fn = "tamoe_rt_dedup_expand_grad";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.dtype(dtype, "dtype")
      .expandRoutes(unique_capacity, k, routes, recv_counts, nodes,
                    ranks_per_node, experts_per_rank)
      .atLeast(expanded_capacity, 0, "expanded_capacity")
      .atLeast(hidden, 1, "hidden")
      .floats(expanded_capacity, hidden, "expanded_capacity * hidden")
      .floats(unique_capacity, hidden, "unique_capacity * hidden")
      .notNull(d_expanded, "d_expanded", expanded_capacity > 0)
      .notNull(d_unique, "d_unique", unique_capacity > 0);
  if (check.status.ok()) {
    intptr_t element = dtypeBytes(raw(dtype));
    check.apart(
        {{d_unique, product(unique_capacity, hidden), element, "d_unique"}},
        {{d_expanded, product(expanded_capacity, hidden), element,
          "d_expanded"},
         {routes, product(unique_capacity, k), 4, "routes"},
         {recv_counts, nodes, 4, "recv_counts"}});
  }
  Status status = check.status;
  if (status.ok()) {
    F32Staging f32(*context->backend);
    const float *dExpanded =
        f32.in(dtype, d_expanded, expanded_capacity * hidden);
    float *dUnique = f32.out(dtype, d_unique, unique_capacity * hidden);
    status = f32.run([&] {
      return context->backend->dedupExpandGrad(
          dExpanded, expanded_capacity, hidden, routes, unique_capacity, k,
          recv_counts, nodes, ranks_per_node, experts_per_rank, dUnique);
    });
  }
  return finish(context, fn, status);
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

tamoe_rt_status_t tamoe_rt_all_reduce(tamoe_rt_context_t *context,
                                      tamoe_rt_group_t group, float *data,
                                      intptr_t n, int32_t average) {
  const char *fn = "tamoe_rt_all_reduce";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  if (Status bad = groupCheck(group); !bad.ok())
    return finish(context, fn, bad);
  Status local = Check()
                     .atLeast(n, 0, "n")
                     .fits(n, 4, "n * 4")
                     .notNull(data, "data", n > 0)
                     .status;
  Status status = context->launcher->agreeOn(
      group, local, {{"n", n}, {"average", average != 0}});
  if (status.ok())
    status = context->backend->allReduce(group, data, n, average != 0);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_sgd(tamoe_rt_context_t *context, float *params,
                               const float *grads, float *velocity, intptr_t n,
                               float lr, float momentum, float weight_decay) {
  const char *fn = "tamoe_rt_sgd";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  intptr_t bytes = floatBytes(n, 1);
  Status status =
      Check()
          .atLeast(n, 0, "n")
          .fits(n, 4, "n * 4")
          .nonNegative(lr, "lr")
          .nonNegative(momentum, "momentum")
          .nonNegative(weight_decay, "weight_decay")
          .notNull(params, "params", n > 0)
          .notNull(grads, "grads", n > 0)
          .that(n == 0 || momentum == 0 || velocity,
                [&] {
                  return str("velocity is null, but momentum = ", momentum,
                             " needs it");
                })
          .disjoint(params, bytes, "params", grads, bytes, "grads")
          .disjoint(params, bytes, "params", velocity, bytes, "velocity")
          .disjoint(grads, bytes, "grads", velocity, bytes, "velocity")
          .status;
  if (status.ok() && n > 0)
    status = context->backend->sgd(params, grads, velocity, n, lr, momentum,
                                   weight_decay);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_adam(tamoe_rt_context_t *context, float *params,
                                const float *grads, float *m, float *v,
                                intptr_t n, int64_t step, float lr, float beta1,
                                float beta2, float eps, float weight_decay) {
  const char *fn = "tamoe_rt_adam";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  intptr_t bytes = floatBytes(n, 1);
  Check check;
  check.atLeast(n, 0, "n")
      .fits(n, 4, "n * 4")
      .that(step >= 1,
            [&] {
              return str("step must be >= 1 (the updates so far, this one "
                         "included), got ",
                         step);
            })
      .nonNegative(lr, "lr")
      .fraction(beta1, "beta1")
      .fraction(beta2, "beta2")
      // eps = 0 would make 0 / 0 of a parameter whose gradients were all
      // zero so far (an expert that received no rows).
      .positive(eps, "eps")
      .nonNegative(weight_decay, "weight_decay");
  std::pair<const float *, const char *> buffers[] = {
      {params, "params"}, {grads, "grads"}, {m, "m"}, {v, "v"}};
  for (auto [pointer, name] : buffers)
    check.notNull(pointer, name, n > 0);
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = i + 1; j < 4; ++j)
      check.disjoint(buffers[i].first, bytes, buffers[i].second,
                     buffers[j].first, bytes, buffers[j].second);
  Status status = check.status;
  if (status.ok() && n > 0)
    status = context->backend->adam(params, grads, m, v, n, step, lr, beta1,
                                    beta2, eps, weight_decay);
  return finish(context, fn, status);
}

} // extern "C"
