"""Fine-tuning a Hugging Face GPT-2 or Llama checkpoint: Tessera against transformers, side by side in one process on
the same torch (docs/results.md, "Fine-tuning a Hugging Face GPT-2" and "... Llama"). Run it through
benchmarks/bench_gpt2.sh (--arch llama for Llama's architecture).

A GPT2LMHeadModel (GPT-2's architecture: tied embeddings, gelu_new, pre-norm blocks) or a LlamaForCausalLM (RMSNorm,
rotary positions, SwiGLU, no biases, grouped-query attention with --n-kv-head), of a small size with bytes as tokens,
is written with save_pretrained; then, in rounds whose order alternates:
* transformers: AutoModelForCausalLM.from_pretrained(folder) trained by a plain PyTorch loop (torch.optim.AdamW,
  cross-entropy over every position);
* tessera: tessera.Trainer(model={"gpt": {"pretrained": folder}}) with Tessera's adamw (torch's AdamW update)
  and the same settings,
both on the same batches of Debian's fortunes (a torch DataLoader over the same tensors, in order), dropout 0, one
intra-op thread. Printed: the median step time of each (steps after the first two), their ratio, and how far apart
the two runs' losses are at each step (the same training from the same weights: differences are float rounding).
"""
import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
import transformers

import tessera


def fortunes(seq, count):
    """count sequences of seq + 1 bytes of Debian's fortunes, one after the other (inputs and next-byte targets)."""
    text = b"".join(open(p, "rb").read() for p in sorted(glob.glob("/usr/share/games/fortunes/*"))
                    if not p.endswith((".dat", ".u8")) and os.path.isfile(p))
    stream = torch.tensor(list(text[: count * seq + 1]), dtype=torch.long)
    x = stream[:-1].view(count, seq)
    y = stream[1:].view(count, seq)
    return x, y


class Probe(tessera.Callback):
    name = "probe"

    def __init__(self):
        super().__init__()
        self.ends, self.losses = [], []

    def batch_end(self, state, logger):
        self.ends.append(time.perf_counter())
        self.losses.append(state.loss.item())


def run_transformers(folder, batches, lr):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ends, losses = [], []
    for x, y in batches:
        logits = model(x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
        losses.append(loss.item())
    return ends, losses


def run_tessera(folder, batches, lr):
    probe = Probe()
    trainer = tessera.Trainer(
        model={"gpt": {"pretrained": folder}},
        train_dataloader=torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False),
        optimizer={"adamw": {"lr": lr, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}},
        max_duration=f"{len(batches)}ba", threads=1, seed=0, callbacks=[probe], loggers=[])
    trainer.fit()
    return probe.ends, probe.losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-kv-head", type=int, default=2, help="Llama's key/value heads")
    parser.add_argument("--d-ff", type=int, default=0, help="Llama's intermediate_size (0: 8/3 of n_embd, to 32)")
    parser.add_argument("--vocab", type=int, default=256, help="vocabulary (the text is bytes: ids below 256)")
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = fortunes(args.seq, args.steps * args.batch)
    batches = [(x[i:i + args.batch], y[i:i + args.batch]) for i in range(0, len(x), args.batch)]
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        if args.arch == "gpt2":
            config = transformers.GPT2Config(vocab_size=args.vocab, n_positions=args.seq, n_embd=args.n_embd,
                                             n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=0.0,
                                             embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
        else:
            d_ff = args.d_ff or (8 * args.n_embd // 3 + 31) // 32 * 32
            config = transformers.LlamaConfig(vocab_size=args.vocab, max_position_embeddings=args.seq,
                                              hidden_size=args.n_embd, intermediate_size=d_ff,
                                              num_hidden_layers=args.n_layer, num_attention_heads=args.n_head,
                                              num_key_value_heads=args.n_kv_head, bos_token_id=None,
                                              eos_token_id=None)
        initial = transformers.AutoModelForCausalLM.from_config(config)
        parameters = sum(p.numel() for p in initial.parameters())
        initial.save_pretrained(folder, safe_serialization=True)
        contenders = {"transformers": run_transformers, "tessera": run_tessera}
        steps = {name: [] for name in contenders}
        losses = {}
        for r in range(args.rounds):
            order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
            for name in order:
                start = time.perf_counter()
                ends, run_losses = contenders[name](folder, batches, args.lr)
                times = [b - a for a, b in zip([start] + ends[:-1], ends)]
                steps[name] += times[2:]  # the first steps warm up allocators and caches
                losses[name] = run_losses
    median = {name: statistics.median(t) for name, t in steps.items()}
    difference = [abs(a - b) for a, b in zip(losses["transformers"], losses["tessera"])]
    result = {
        "torch": torch.__version__, "transformers": transformers.__version__, "tessera": tessera.__version__,
        "model": {"arch": args.arch, "n_embd": args.n_embd, "n_layer": args.n_layer, "n_head": args.n_head,
                  "vocab": args.vocab, "parameters": parameters},
        "batch": args.batch, "seq": args.seq, "steps": args.steps, "rounds": args.rounds,
        "step_ms": {name: round(1000 * m, 2) for name, m in median.items()},
        "step_ms_range": {name: [round(1000 * min(t), 2), round(1000 * max(t), 2)] for name, t in steps.items()},
        "tessera_speedup": round(median["transformers"] / median["tessera"], 3),
        "loss_first": {name: round(v[0], 5) for name, v in losses.items()},
        "loss_last": {name: round(v[-1], 5) for name, v in losses.items()},
        "loss_max_difference": max(difference),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
