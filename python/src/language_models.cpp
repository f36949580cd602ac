// Python bindings of the language-model algorithms: sequence-length warmup, ALiBi, gated linear units and
// low-precision LayerNorm, with its sibling for GroupNorm (tessera.algorithms), their functional forms
// (tessera.functional), text generation (tessera.functional.generate; Trainer.generate wraps it) and Hugging Face
// GPT-2 and Llama checkpoints written from the gpt model (tessera.functional.save_gpt2 / save_huggingface;
// Trainer.export_huggingface).
#include "common.h"

#include <tessera/algorithms/alibi.h>
#include <tessera/algorithms/gated_linear_units.h>
#include <tessera/algorithms/low_precision_groupnorm.h>
#include <tessera/algorithms/low_precision_layernorm.h>
#include <tessera/algorithms/seq_length_warmup.h>
#include <tessera/batch.h>
#include <tessera/data/tokenizer.h>
#include <tessera/data/transforms.h>
#include <tessera/models/generate.h>
#include <tessera/models/gpt.h>
#include <tessera/models/hf_gpt2.h>
#include <tessera/models/huggingface.h>

namespace tessera::python {

namespace alg = tessera::algorithms;

void bind_language_model_algorithms(py::module_& m, py::module_& f) {
  bind_algorithm<alg::SeqLengthWarmup, alg::SeqLengthWarmupOptions>(
      m, "SeqLengthWarmup", "seq_length_warmup",
      "Sequence-length warmup (Li et al. 2022) at AFTER_DATALOADER: token sequences [N, S] are cut (truncate) or "
      "re-chunked to a length growing linearly from min_seq_length to max_seq_length over the first `duration` of "
      "training (Composer's schedule). Keeps no state, so it resumes exactly.")
      .def_property_readonly("last_seq_length", &alg::SeqLengthWarmup::last_seq_length,
                             "The sequence length of the last batch (0 before the first).");

  bind_algorithm<alg::Alibi, alg::AlibiOptions>(
      m, "Alibi", "alibi",
      "ALiBi (Press et al. 2022) by surgery at INIT on the gpt model: each attention head adds -m_h * |i - j| to its "
      "scores and the position embedding is zeroed and frozen; at AFTER_DATALOADER training sequences are re-chunked "
      "to train_sequence_length_scaling of their length (evaluation keeps the full length).")
      .def_property_readonly("counts", [](const alg::Alibi& a) {
        return py::dict(py::arg("attentions") = a.counts().attentions,
                        py::arg("position_embeddings") = a.counts().position_embeddings);
      }, "What the last surgery changed: {'attentions': n, 'position_embeddings': m}.");

  bind_algorithm<alg::GatedLinearUnits, alg::GatedLinearUnitsOptions>(
      m, "GatedLinearUnits", "gated_linear_units",
      "Gated linear units (Shazeer 2020) by surgery at INIT: every feed-forward network of the gpt model becomes "
      "proj(gelu(fc_gated(x)) * fc_linear(x)); proj keeps its weights and optimizer state.")
      .def_property_readonly("replaced", &alg::GatedLinearUnits::replaced,
                             "Feed-forward networks replaced by the last surgery.");

  bind_algorithm<alg::LowPrecisionLayerNorm, alg::LowPrecisionLayerNormOptions>(
      m, "LowPrecisionLayerNorm", "low_precision_layernorm",
      "Low-precision LayerNorm by surgery at INIT: under autocast, LayerNorms compute in the autocast dtype (bf16 or "
      "fp16) instead of fp32; the same weights under the same names. Refused without mixed precision.")
      .def_property_readonly("replaced", &alg::LowPrecisionLayerNorm::replaced,
                             "LayerNorms replaced by the last surgery.");

  bind_algorithm<alg::LowPrecisionGroupNorm, alg::LowPrecisionGroupNormOptions>(
      m, "LowPrecisionGroupNorm", "low_precision_groupnorm",
      "Low-precision GroupNorm by surgery at INIT: under autocast, GroupNorms compute in the autocast dtype (bf16 or "
      "fp16) instead of fp32; the same weights under the same names. Refused without mixed precision.")
      .def_property_readonly("replaced", &alg::LowPrecisionGroupNorm::replaced,
                             "GroupNorms replaced by the last surgery.");

  f.def("warmup_seq_length", &alg::warmup_seq_length, py::arg("batch"), py::arg("total_batches"),
        py::arg("duration"), py::arg("min_seq_length"), py::arg("max_seq_length"), py::arg("step_size"),
        "Sequence-length warmup's length at a batch: min(max, min + step * (batch // every)) with every = max(1, "
        "W // max(1, (max - min) // step)), W = int(total_batches * duration); max when W = 0.");
  f.def("set_seq_length", &tessera::set_seq_length, py::arg("batch"), py::arg("length"), py::arg("truncate") = true,
        "The tessera.Batch with sequences of `length`: every part [N, S, ...] of the input's length S cut to its first "
        "`length` positions (truncate) or re-chunked into [N * S // length, length, ...] (the remainder dropped).");
  f.def(
      "mask_tokens",
      [](const at::Tensor& ids, uint64_t seed, const py::kwargs& kwargs) {
        Batch batch(ids, ids);  // the target is replaced; the ids are copied, never written
        Rng rng(seed);
        data::MaskTokens(options_from_kwargs<data::MaskTokensOptions>(kwargs, "mask_tokens")).apply(batch, rng);
        return py::make_tuple(batch.input(), batch.target());
      },
      py::arg("ids"), py::arg("seed") = 0,
      "BERT's masking of integer token ids [N, S] (keyword arguments as for the mask_tokens transform: probability, "
      "vocab_size, replace_with_mask, replace_with_random): (inputs, targets), int64 [N, S] each, the targets holding "
      "the hidden tokens' ids and -100 elsewhere. Example i's draws come from Rng(seed) derived with i: a function of "
      "the seed. For a masked language model fed by one's own DataLoader (recipe data use the mask_tokens transform).");
  f.def("alibi_slopes", [](int64_t n_heads) { return alibi_slopes(n_heads, at::TensorOptions()); },
        py::arg("n_heads"), "ALiBi's head slopes, float [n_heads]: 2^(-8(h+1)/H) for H a power of two.");
  f.def("alibi_bias", [](int64_t n_heads, int64_t seq_length) { return alibi_bias(n_heads, seq_length, at::TensorOptions()); },
        py::arg("n_heads"), py::arg("seq_length"),
        "ALiBi's attention bias [n_heads, S, S]: -m_h * |i - j| at (h, i, j) (causal attention reads its lower half).");
  f.def(
      "apply_alibi",
      [](Model& model) {
        const auto counts = alg::apply_alibi(model);
        return py::dict(py::arg("attentions") = counts.attentions,
                        py::arg("position_embeddings") = counts.position_embeddings);
      },
      py::arg("model"),
      "ALiBi surgery on a tessera.Model: returns {'attentions': n, 'position_embeddings': m}.");
  f.def(
      "apply_gated_linear_units",
      [](Model& model, const py::kwargs& kwargs) {
        return alg::apply_gated_linear_units(
            model, options_from_kwargs<alg::GatedLinearUnitsOptions>(kwargs, "gated_linear_units"));
      },
      py::arg("model"),
      "Gated-linear-units surgery on a tessera.Model (keyword arguments as for "
      "tessera.algorithms.GatedLinearUnits); returns how many feed-forward networks were replaced.");
  f.def("gated_linear_unit",
        [](const at::Tensor& x, const at::Tensor& w_gated, const c10::optional<at::Tensor>& b_gated,
                       const at::Tensor& w_linear, const c10::optional<at::Tensor>& b_linear,
                       const std::string& activation) {
          return alg::gated_linear_unit(x, w_gated, b_gated.value_or(at::Tensor()), w_linear,
                                        b_linear.value_or(at::Tensor()), activation);
        },
        py::arg("x"), py::arg("w_gated"), py::arg("b_gated"),
        py::arg("w_linear"), py::arg("b_linear"), py::arg("activation") = "gelu",
        "gelu(x @ w_gated.T + b_gated) * (x @ w_linear.T + b_linear) (biases may be None; activation 'gelu' or "
        "'gelu_tanh', the tanh approximation).");
  f.def("apply_low_precision_layernorm", [](Model& model) { return alg::apply_low_precision_layernorm(model); },
        py::arg("model"), "Low-precision LayerNorm surgery on a tessera.Model; returns how many were replaced.");
  f.def("low_precision_layer_norm",
        [](const at::Tensor& x, const std::vector<int64_t>& shape, const c10::optional<at::Tensor>& weight,
                       const c10::optional<at::Tensor>& bias, double eps) {
          return alg::low_precision_layer_norm(x, shape, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()), eps);
        },
        py::arg("x"), py::arg("normalized_shape"),
        py::arg("weight"), py::arg("bias"), py::arg("eps") = 1e-5,
        "layer_norm computed in the autocast dtype of x's device when autocast is on there, else torch's "
        "layer_norm.");
  f.def("apply_low_precision_groupnorm", [](Model& model) { return alg::apply_low_precision_groupnorm(model); },
        py::arg("model"), "Low-precision GroupNorm surgery on a tessera.Model; returns how many were replaced.");
  f.def("low_precision_group_norm",
        [](const at::Tensor& x, int64_t num_groups, const c10::optional<at::Tensor>& weight,
           const c10::optional<at::Tensor>& bias, double eps) {
          return alg::low_precision_group_norm(x, num_groups, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                                               eps);
        },
        py::arg("x"), py::arg("num_groups"), py::arg("weight"), py::arg("bias"), py::arg("eps") = 1e-5,
        "group_norm computed in the autocast dtype of x's device when autocast is on there, else torch's "
        "group_norm.");
  static const std::string generate_doc =
      "The prompts (integer token ids [N, P]) followed by up to max_new_tokens tokens the language model generates, "
      "int64 [N, P + T] (fewer when every row reached eos_token). tokenizer: the tessera.data.Tokenizer of the ids, "
      "which eos_text needs (None: bytes). Keyword arguments:\n" +
      options_doc<GenerateOptions>();
  f.def(
      "generate",
      [](Model& model, const at::Tensor& prompt, const data::Tokenizer* tokenizer, const py::kwargs& kwargs) {
        const auto options = resolve_eos_text(options_from_kwargs<GenerateOptions>(kwargs, "generate"), tokenizer);
        py::gil_scoped_release release;  // a Python model takes the GIL for its own forward
        return tessera::generate(model, prompt, options);
      },
      py::arg("model"), py::arg("prompt"), py::arg("tokenizer") = nullptr, generate_doc.c_str());
  f.def(
      "save_gpt2",
      [](Model& model, const std::string& folder, const data::Tokenizer* tokenizer) {
        py::gil_scoped_release release;
        save_gpt2(model, folder, tokenizer);
      },
      py::arg("model"), py::arg("folder"), py::arg("tokenizer") = nullptr,
      "Writes the gpt model to `folder` as a Hugging Face GPT-2 checkpoint (config.json and model.safetensors, "
      "which transformers' GPT2LMHeadModel.from_pretrained reads; with `tokenizer`, the tessera.data.Tokenizer of "
      "the model's text, its tokenizer.json too, for AutoTokenizer); refused, writing nothing, for a model GPT-2 "
      "cannot hold (ALiBi, gated linear units, factorized layers, stochastic depth, a bert model).");
  f.def(
      "save_huggingface",
      [](Model& model, const std::string& folder, const data::Tokenizer* tokenizer) {
        py::gil_scoped_release release;
        save_huggingface(model, folder, tokenizer);
      },
      py::arg("model"), py::arg("folder"), py::arg("tokenizer") = nullptr,
      "Writes the gpt model to `folder` as a Hugging Face checkpoint: Llama's (LlamaForCausalLM) for a model of "
      "Llama's architecture (rotary positions, RMSNorm, gated feed-forward networks), GPT-2's (as save_gpt2) "
      "otherwise; with `tokenizer` its tokenizer.json too. Refused, writing nothing, for a model the format cannot "
      "hold.");
}

}  // namespace tessera::python
