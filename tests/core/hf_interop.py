"""Hugging Face transformers' GPT2LMHeadModel beside Tessera's gpt model (tests/core/hf_gpt2_interop_test.cpp).

    hf_gpt2_interop.py make FOLDER CONFIG_JSON SEED
        a GPT2LMHeadModel of that configuration whose every weight is random (biases, LayerNorms and all), saved
        with save_pretrained (config.json, model.safetensors)
    hf_gpt2_interop.py run FOLDER INPUTS OUTPUTS [FOLDER INPUTS OUTPUTS ...]
        GPT2LMHeadModel.from_pretrained(FOLDER) in evaluation mode: the float32 logits [N, S, vocab] of INPUTS'
        "ids" [N, S], and the greedy continuation ("generated", [1, P + T]) of its "prompt" [1, P] by
        metadata "new_tokens" T tokens, written to OUTPUTS (safetensors; metadata: the transformers version);
        when FOLDER holds a tokenizer.json, also the ids ("encoded") AutoTokenizer.from_pretrained(FOLDER) gives
        the text of metadata "text"
"""
import os
import json
import sys

import torch
import transformers
from safetensors.torch import load_file, safe_open, save_file


def make(folder, config_json, seed):
    torch.manual_seed(int(seed))
    values = json.loads(config_json)
    config = transformers.AutoConfig.for_model(values.pop("model_type", "gpt2"), **values)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder, safe_serialization=True)


def run(folder, inputs, outputs):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    tensors = load_file(inputs)
    with safe_open(inputs, framework="pt") as f:
        new_tokens = int(f.metadata()["new_tokens"])
    with torch.no_grad():
        logits = model(tensors["ids"]).logits.float().contiguous()
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        generated = model.generate(tensors["prompt"], attention_mask=torch.ones_like(tensors["prompt"]),
                                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    out = {"logits": logits, "generated": generated.contiguous()}
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        with safe_open(inputs, framework="pt") as f:
            text = f.metadata()["text"]
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        out["encoded"] = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    save_file(out, outputs, metadata={"transformers": transformers.__version__})


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(*sys.argv[2:5])
    elif sys.argv[1] == "run":
        args = sys.argv[2:]
        for i in range(0, len(args), 3):
            run(*args[i:i + 3])
    else:
        sys.exit(f"hf_interop.py: unknown command {sys.argv[1]!r}; expected make or run")
