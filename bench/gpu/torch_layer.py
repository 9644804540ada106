#!/usr/bin/env python3
"""torch_layer.py - bench/gpu/e2e.sh's MoE layer written in PyTorch.

The layer of bench/gpu/moe_layer.mlir.in (router matmul, softmax top-k gate
with renormalized weights, dispatch, all-to-all, expert FFNs with relu,
all-to-all back, weighted combine, switch load-balancing loss), with rows
of --dtype (f32, or bf16 with f32 logits and gate weights, as the compiled
program computes them), the way Megatron-Core writes it: permute
by a stable argsort of the expert ids + index_select, per-expert matmuls
over the rows each expert received (SequentialMLP), un-permute with
index_copy and a weighted sum over the k slots. Each stage is timed on its
own (CUDA events, median of --iterations after warm-up) and written to a CSV
(stage,median_us) with the stage names of e2e_report.py.

--experts-impl loop (default) runs one matmul pair per (source, expert) block, as
SequentialMLP does; --experts-impl grouped_mm runs each GEMM of the expert stage
as one torch._grouped_mm over all blocks (bf16, the GPU's grouped GEMM).
--activation swiglu makes the experts silu(x W1) * (x W3) W2 (Mixtral,
DeepSeek, Qwen) instead of relu(x W1) W2.

One GPU: python3 torch_layer.py ARGS. Several: torchrun --nproc-per-node N
torch_layer.py ARGS (NCCL all_to_all_single; rank 0 writes the CSV).
"""

import argparse
import csv
import os

import torch
import torch.distributed as dist

from torch_reference import Timer


def median_us(body, iterations):
    return Timer("cuda").median_us(body, warmup=3, iterations=iterations)


def main():
    parser = argparse.ArgumentParser()
    for name in ("tokens", "hidden", "ffn", "experts", "top-k", "iterations"):
        parser.add_argument("--" + name, type=int, required=True)
    parser.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    parser.add_argument("--experts-impl", choices=("loop", "grouped_mm"),
                        default="loop")
    parser.add_argument("--activation", choices=("relu", "swiglu"),
                        default="relu")
    parser.add_argument("--csv", required=True)
    args = parser.parse_args()
    if args.experts_impl == "grouped_mm" and args.dtype != "bf16":
        parser.error("--experts-impl grouped_mm takes --dtype bf16 "
                     "(torch._grouped_mm multiplies bf16)")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    device = torch.device("cuda")
    S, H, F, E, k = args.tokens, args.hidden, args.ffn, args.experts, args.top_k
    local = E // world
    gen = torch.Generator(device=device).manual_seed(1234 + rank)

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    def uniform(*shape):
        return (torch.rand(*shape, generator=gen, device=device) * 2 - 1).to(dtype)

    x = uniform(S, H)
    router = uniform(H, E)
    w1 = uniform(local, H, F)
    w2 = uniform(local, F, H)
    w3 = uniform(local, H, F) if args.activation == "swiglu" else None
    if args.experts_impl == "grouped_mm" and not hasattr(torch, "_grouped_mm"):
        raise SystemExit("torch_layer.py: this PyTorch has no torch._grouped_mm")

    # --- the stages -----------------------------------------------------------
    def router_matmul():
        # Routing is f32 whatever the rows are.
        return (x @ router).float()

    def gate(logits):
        scores = torch.softmax(logits, dim=-1)
        probs, ids = torch.topk(scores, k, dim=-1)
        return scores, probs / probs.sum(dim=-1, keepdim=True), ids

    def dispatch(ids):
        flat = ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        rows = x.index_select(0, order // k)
        counts = torch.bincount(flat, minlength=E)
        return order, rows, counts

    def exchange(rows, send_counts):
        """Rows grouped [peer, local expert] -> received rows and counts
        [source, local expert] (Megatron's token dispatcher)."""
        if world == 1:
            return rows, send_counts.view(1, local)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts)
        send_split = send_counts.view(world, local).sum(1).tolist()
        recv_split = recv_counts.view(world, local).sum(1).tolist()
        received = rows.new_empty(sum(recv_split), H)
        dist.all_to_all_single(received, rows, recv_split, send_split)
        return received, recv_counts.view(world, local)

    def exchange_back(outputs, recv_counts, send_counts):
        if world == 1:
            return outputs
        back = outputs.new_empty(int(send_counts.sum()), H)
        dist.all_to_all_single(back, outputs,
                               send_counts.view(world, local).sum(1).tolist(),
                               recv_counts.sum(1).tolist())
        return back

    def hidden_of(a, b):
        """The experts' hidden activation from x W1 (and x W3)."""
        if args.activation == "swiglu":
            return torch.nn.functional.silu(a) * b
        return torch.relu(a)

    def experts_loop(received, recv_counts):
        chunks = recv_counts.reshape(-1).tolist()
        outputs = []
        for c, chunk in enumerate(torch.split(received, chunks)):
            e = c % local
            up = chunk @ w3[e] if w3 is not None else None
            outputs.append(hidden_of(chunk @ w1[e], up) @ w2[e])
        return torch.cat(outputs)

    # Block c of the received rows (source c / local, expert c % local) takes
    # its expert's weights: with several sources each expert's weights are
    # repeated per source, once, outside the timed steps.
    experts_of = torch.arange(world * local, device=device) % local

    def per_block(w):
        if w is None or world == 1:
            return w
        return w.index_select(0, experts_of).contiguous()

    w1_blocks, w2_blocks, w3_blocks = per_block(w1), per_block(w2), per_block(w3)

    def experts_grouped(received, recv_counts):
        # Every block in one grouped GEMM: offs are the blocks' ends.
        offs = torch.cumsum(recv_counts.reshape(-1), 0).to(torch.int32)

        def gmm(rows, w):
            return torch._grouped_mm(rows, w, offs=offs)

        up = gmm(received, w3_blocks) if w3 is not None else None
        return gmm(hidden_of(gmm(received, w1_blocks), up), w2_blocks)

    experts = experts_grouped if args.experts_impl == "grouped_mm" else experts_loop

    def combine(back, order, probs):
        unpermuted = torch.empty_like(back)
        unpermuted.index_copy_(0, order, back)
        weights = probs.unsqueeze(-1).to(dtype)
        return (unpermuted.view(S, k, H) * weights).sum(dim=1)

    def aux_loss(scores, counts):
        return E * torch.sum(scores.mean(dim=0) * counts.float() / (S * k))

    # One forward to have every stage's inputs.
    logits = router_matmul()
    scores, probs, ids = gate(logits)
    order, rows, counts = dispatch(ids)
    received, recv_counts = exchange(rows, counts)
    outputs = experts(received, recv_counts)
    back = exchange_back(outputs, recv_counts, counts)
    out = combine(back, order, probs)
    assert out.shape == (S, H) and torch.isfinite(out).all()

    n = args.iterations
    stages = [
        ("router matmul", median_us(router_matmul, n)),
        ("gate", median_us(lambda: gate(logits), n)),
        ("dispatch", median_us(lambda: dispatch(ids), n)),
        ("all-to-all (both)", median_us(
            lambda: exchange_back(exchange(rows, counts)[0], recv_counts, counts), n)),
        ("expert GEMMs + activation",
         median_us(lambda: experts(received, recv_counts), n)),
        ("combine", median_us(lambda: combine(back, order, probs), n)),
        ("aux loss", median_us(lambda: aux_loss(scores, counts), n)),
    ]
    if rank == 0:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["stage", "median_us"])
            for stage, us in stages:
                writer.writerow([stage, f"{us:.2f}"])
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
