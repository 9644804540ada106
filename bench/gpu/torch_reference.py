#!/usr/bin/env python3
"""torch_reference.py - an MoE layer's routing steps as PyTorch code writes them.

Times the gate, the permute (dispatch) and the un-permute + weighted combine
the way Megatron-Core and DeepSpeed write them, at the shapes of
tamoe_gpu_bench's `bench` mode, and writes the CSV that report.py reads
(impl,op,tokens,hidden,experts,k,median_us,bytes):

  python3 torch_reference.py --csv FILE [--quick] [--device cuda|cpu]

Implementations (the `impl` column):
  megatron_argsort      Megatron-Core up to 0.8 (moe_utils.permute/unpermute):
                        softmax + topk gate; permute = stable argsort of the
                        flattened expert ids + index_select(sorted // topk);
                        unpermute = index_copy into [T*k, H], * probs, sum
                        over the k slots.
  megatron_routing_map  Megatron-Core from 0.9: the gate also builds the
                        [T, E] routing map; permute = masked_select of the
                        token indices + index_select; unpermute = rows *
                        permuted probs, scatter_add into [T, H].
  deepspeed_einsum      DeepSpeed's top-k gating (sharded_moe.topkgating):
                        one-hot dispatch mask and combine weights [S, E, C],
                        dispatch einsum "sec,sm->ecm", combine einsum
                        "sec,ecm->sm"; capacity = the largest expert load
                        (drop_tokens=False), so nothing is dropped.

Tokens are bf16 rows (hidden 4096, as tamoe's dispatch moves them); the
expert outputs being combined are f32 (tamoe's combine is f32). Each
implementation's results are checked (permutation order, combine of
identity experts) before it is timed. Times are medians of CUDA-event
intervals on the current stream (perf_counter on --device cpu, for testing
this script without a GPU).
"""

import argparse
import statistics
import sys
import time

import torch

HIDDEN = 4096
EXPERTS = 64


class Timer:
    def __init__(self, device):
        self.device = device

    def median_us(self, body, warmup, iterations):
        for _ in range(warmup):
            body()
        samples = []
        if self.device == "cuda":
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            for _ in range(iterations):
                # Under torchrun, every rank starts an interval together.
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.barrier()
                start.record()
                body()
                stop.record()
                stop.synchronize()
                samples.append(start.elapsed_time(stop) * 1000.0)
        else:
            for _ in range(iterations):
                begin = time.perf_counter()
                body()
                samples.append((time.perf_counter() - begin) * 1e6)
        return statistics.median(samples)


# --- Megatron-Core, up to 0.8 -------------------------------------------------

def megatron_gate(logits, k):
    # topk_softmax_with_capacity with moe_router_pre_softmax: full softmax
    # (also what the load-balancing loss needs), then top-k.
    scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
    probs, indices = torch.topk(scores, k, dim=1)
    return scores, probs, indices


def megatron_permute(tokens, indices):
    topk = indices.size(1)
    flatten_indices = indices.view(-1)
    sorted_indices = torch.argsort(flatten_indices, stable=True)
    permuted = tokens.index_select(0, sorted_indices // topk)
    return permuted, sorted_indices


def megatron_unpermute(permuted, sorted_indices, probs):
    topk = probs.size(1)
    unpermuted = torch.zeros(
        [sorted_indices.numel(), permuted.shape[-1]],
        dtype=permuted.dtype, device=permuted.device)
    unpermuted.index_copy_(0, sorted_indices, permuted)
    unpermuted = unpermuted.reshape(-1, topk, permuted.size(-1))
    unpermuted = unpermuted * probs.unsqueeze(-1)
    return unpermuted.sum(dim=1)


# --- Megatron-Core, from 0.9 (routing map) --------------------------------------

def routing_map_gate(logits, k):
    scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
    top_probs, top_indices = torch.topk(scores, k, dim=1)
    probs = torch.zeros_like(scores).scatter(1, top_indices, top_probs)
    routing_map = torch.zeros_like(logits).int().scatter(
        1, top_indices, 1).bool()
    return scores, probs, routing_map


def routing_map_permute(tokens, routing_map):
    num_tokens = tokens.shape[0]
    num_experts = routing_map.shape[1]
    routing_map = routing_map.bool().T.contiguous()
    token_indices = torch.arange(
        num_tokens, device=routing_map.device).unsqueeze(0).expand(
            num_experts, -1)
    sorted_indices = token_indices.masked_select(routing_map)
    permuted = tokens.index_select(0, sorted_indices)
    return permuted, sorted_indices


def routing_map_unpermute(permuted, sorted_indices, restore_shape, probs,
                          routing_map):
    _, hidden = restore_shape
    permuted_probs = probs.T.contiguous().masked_select(
        routing_map.T.contiguous())
    permuted = permuted * permuted_probs.unsqueeze(-1)
    output = torch.zeros(restore_shape, device=permuted.device,
                         dtype=permuted.dtype)
    output.scatter_add_(0, sorted_indices.unsqueeze(1).expand(-1, hidden),
                        permuted)
    return output


# --- DeepSpeed -----------------------------------------------------------------

def deepspeed_gate(logits, k):
    """sharded_moe.topkgating with drop_tokens=False."""
    gates = torch.softmax(logits, dim=1)
    topk_gates, topk_indices = torch.topk(gates, k, dim=1)
    mask = torch.zeros_like(gates, dtype=torch.bool).scatter_(
        1, topk_indices, 1)
    exp_counts = torch.sum(mask, dim=0).detach()
    # drop_tokens=False: the capacity is the largest load (a host sync, as
    # in DeepSpeed).
    capacity = int(torch.max(exp_counts).item())
    locations = torch.cumsum(mask, dim=0) - 1
    mask = mask * torch.lt(locations, capacity)
    gates_masked = gates * mask
    denom = torch.clamp(torch.sum(gates_masked, dim=-1, keepdim=True),
                        min=torch.finfo(gates_masked.dtype).eps)
    gates_masked = gates_masked / denom
    locations_sc = torch.nn.functional.one_hot(
        (locations * mask).long(), num_classes=capacity).float()
    combine_weights = torch.einsum("se,sec->sec", gates_masked, locations_sc)
    dispatch_mask = combine_weights.bool()
    return gates, combine_weights, dispatch_mask


def deepspeed_dispatch(tokens, dispatch_mask):
    return torch.einsum("sec,sm->ecm", dispatch_mask.type_as(tokens), tokens)


def deepspeed_combine(expert_output, combine_weights):
    return torch.einsum("sec,ecm->sm", combine_weights.type_as(expert_output),
                        expert_output)


# --- Checks and timing ---------------------------------------------------------

def check(condition, what):
    if not condition:
        raise AssertionError(what)


def run_shape(timer, rows, tokens, k, device, warmup, iterations):
    generator = torch.Generator(device="cpu").manual_seed(tokens * 31 + k)
    logits = (torch.rand(tokens, EXPERTS, generator=generator) * 8 - 4).to(
        device)
    x = torch.randn(tokens, HIDDEN, generator=generator).to(device).to(
        torch.bfloat16)
    row_bytes = HIDDEN * 2
    gate_bytes = tokens * EXPERTS * 8 + tokens * k * 8
    permute_bytes = 2 * tokens * k * row_bytes
    combine_bytes = tokens * k * HIDDEN * 4 + tokens * HIDDEN * 4

    def emit(impl, op, micros, moved):
        rows.append((impl, op, tokens, HIDDEN, EXPERTS, k, micros, moved))
        print(f"{impl:22s} {op:18s} T={tokens:<6d} k={k:<2d} {micros:10.1f} us",
              flush=True)

    # Megatron, argsort.
    scores, probs, indices = megatron_gate(logits, k)
    permuted, sorted_indices = megatron_permute(x, indices)
    check(torch.equal(permuted, x[sorted_indices // k]), "argsort permute rows")
    # Rows grouped by expert, tokens ascending within an expert.
    flat = indices.view(-1)[sorted_indices]
    check(bool(torch.all(flat[1:] >= flat[:-1])), "argsort permute order")
    outputs = permuted.float()
    combined = megatron_unpermute(outputs, sorted_indices, probs)
    check(torch.allclose(combined, x.float() * probs.sum(1, keepdim=True),
                         rtol=1e-4, atol=1e-4), "argsort unpermute")
    emit("megatron_argsort", "gate",
         timer.median_us(lambda: megatron_gate(logits, k), warmup, iterations),
         gate_bytes)
    emit("megatron_argsort", "permute",
         timer.median_us(lambda: megatron_permute(x, indices), warmup,
                         iterations), permute_bytes)
    emit("megatron_argsort", "unpermute_combine",
         timer.median_us(lambda: megatron_unpermute(outputs, sorted_indices,
                                                    probs),
                         warmup, iterations), combine_bytes)

    # Megatron, routing map.
    _, dense_probs, routing_map = routing_map_gate(logits, k)
    permuted_rm, sorted_rm = routing_map_permute(x, routing_map)
    check(torch.equal(permuted_rm, permuted),
          "routing-map permute equals argsort permute")
    outputs_rm = permuted_rm.float()
    combined_rm = routing_map_unpermute(outputs_rm, sorted_rm,
                                        (tokens, HIDDEN), dense_probs,
                                        routing_map)
    check(torch.allclose(combined_rm, combined, rtol=1e-4, atol=1e-4),
          "routing-map unpermute equals argsort unpermute")
    emit("megatron_routing_map", "gate",
         timer.median_us(lambda: routing_map_gate(logits, k), warmup,
                         iterations), gate_bytes)
    emit("megatron_routing_map", "permute",
         timer.median_us(lambda: routing_map_permute(x, routing_map), warmup,
                         iterations), permute_bytes)
    emit("megatron_routing_map", "unpermute_combine",
         timer.median_us(lambda: routing_map_unpermute(
             outputs_rm, sorted_rm, (tokens, HIDDEN), dense_probs,
             routing_map), warmup, iterations), combine_bytes)

    # DeepSpeed: dense [S, E, C] masks (GEMMs of S x E*C x H), skipped where
    # they do not fit; fewer iterations, they take up to a second each.
    ds_warmup, ds_iterations = min(warmup, 2), max(3, iterations // 3)
    try:
        _, combine_weights, dispatch_mask = deepspeed_gate(logits, k)
        dispatched = deepspeed_dispatch(x, dispatch_mask)
        expert_out = dispatched.float()
        combined_ds = deepspeed_combine(expert_out, combine_weights)
        weight_sums = combine_weights.sum(dim=(1, 2)).unsqueeze(1)
        check(torch.allclose(combined_ds, x.float() * weight_sums, rtol=2e-2,
                             atol=2e-2), "deepspeed combine of its dispatch")
        emit("deepspeed_einsum", "gate",
             timer.median_us(lambda: deepspeed_gate(logits, k), ds_warmup,
                             ds_iterations), gate_bytes)
        emit("deepspeed_einsum", "permute",
             timer.median_us(lambda: deepspeed_dispatch(x, dispatch_mask),
                             ds_warmup, ds_iterations), permute_bytes)
        emit("deepspeed_einsum", "unpermute_combine",
             timer.median_us(lambda: deepspeed_combine(expert_out,
                                                       combine_weights),
                             ds_warmup, ds_iterations), combine_bytes)
        del combine_weights, dispatch_mask, dispatched, expert_out
    except RuntimeError as error:  # torch.cuda.OutOfMemoryError among them
        print(f"deepspeed_einsum T={tokens} k={k}: skipped ({error})",
              flush=True)
    if device == "cuda":
        torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tokens", default="4096,16384")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_reference.py: no CUDA device visible to PyTorch",
              file=sys.stderr)
        return 2
    warmup, iterations = (2, 5) if args.quick else (5, 30)
    timer = Timer(args.device)
    rows = []
    for tokens in [int(t) for t in args.tokens.split(",")]:
        for k in (2, 8):
            run_shape(timer, rows, tokens, k, args.device, warmup, iterations)
    with open(args.csv, "w") as out:
        out.write("impl,op,tokens,hidden,experts,k,median_us,bytes\n")
        for row in rows:
            out.write(",".join(str(value) for value in row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
