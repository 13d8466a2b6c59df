#!/usr/bin/env python3
"""Writes the tiny random checkpoints of tests/arch_transformers.rs (run once; committed).

For each architecture variant the decoder supports, a random-weight model built by
transformers itself (seeded), saved as a Hugging Face folder (config.json, model.safetensors)
under tests/fixtures/arch/NAME/, and the next-token logits transformers computes (float32, eager
attention) after every prefix of a few prompts, in logits.json. Variants:

- llama: untied head;            llama_tied: head tied to the embedding;
- mistral_window: sliding window 4, prompts up to 11 tokens (the window matters, checked);
- qwen2_bias: q/k/v biases, untied; qwen2_tied: as Qwen2.5-0.5B, tied;
- llama3_rope: llama3 rope scaling with frequencies in all three bands (kept, smoothed, divided).

Needs: torch, transformers, safetensors.
"""
import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "arch"
PROMPTS = [[3], [5, 17, 2, 40, 11], [7, 1, 60, 33, 33, 9, 24, 50, 2, 13, 44]]
COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
              initializer_range=0.15)


def variants():
    yield "llama", LlamaForCausalLM, LlamaConfig(**COMMON, rope_theta=10000.0, tie_word_embeddings=False)
    yield "llama_tied", LlamaForCausalLM, LlamaConfig(**COMMON, rope_theta=500.0, tie_word_embeddings=True)
    yield "mistral_window", MistralForCausalLM, MistralConfig(**COMMON, rope_theta=10000.0, sliding_window=4, tie_word_embeddings=False)
    yield "qwen2_bias", Qwen2ForCausalLM, Qwen2Config(**COMMON, rope_theta=1e6, tie_word_embeddings=False, use_sliding_window=False)
    yield "qwen2_tied", Qwen2ForCausalLM, Qwen2Config(**COMMON, rope_theta=1e6, tie_word_embeddings=True, use_sliding_window=False)
    rope = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32}
    yield "llama3_rope", LlamaForCausalLM, LlamaConfig(**COMMON, rope_theta=100.0, rope_scaling=rope, tie_word_embeddings=False)


def logits(model, prompts):
    out = []
    with torch.no_grad():
        for p in prompts:
            full = model(torch.tensor([p])).logits[0]  # (T, vocab): position t is the prefix p[:t+1]
            out.append(full.tolist())
    return out


def main():
    for i, (name, cls, cfg) in enumerate(variants()):
        torch.manual_seed(1000 + i)
        cfg._attn_implementation = "eager"
        model = cls(cfg).float().eval()
        with torch.no_grad():  # random norms and biases too, not ones and zeros
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
                elif n.endswith(".bias"):
                    p.normal_(0, 0.1)
        d = OUT / name
        model.save_pretrained(d, safe_serialization=True)
        for extra in ["generation_config.json"]:
            (d / extra).unlink(missing_ok=True)
        got = logits(model, PROMPTS)
        if name == "mistral_window":
            cfg2 = MistralConfig(**{**cfg.to_dict(), "sliding_window": None})
            cfg2._attn_implementation = "eager"
            m2 = cls(cfg2).float().eval()
            m2.load_state_dict(model.state_dict())
            long = torch.tensor(got[2][-1]) - torch.tensor(logits(m2, PROMPTS)[2][-1])
            assert long.abs().max() > 1e-3, "the sliding window made no difference"
        (d / "logits.json").write_text(json.dumps({"prompts": PROMPTS, "logits": got}))
        big = max(abs(x) for row in got for pos in row for x in pos)
        print(name, sum(p.numel() for p in model.parameters()), "parameters", (d / "model.safetensors").stat().st_size, "bytes, max abs logit", round(big, 3))


if __name__ == "__main__":
    main()
