//! The pre-tokenizer of a byte-level BPE vocabulary, chosen by the GGUF's `tokenizer.ggml.pre`.
//!
//! llama.cpp names each model family's pre-tokenizer in the GGUF (`llama-vocab.cpp`, the
//! `tokenizer_pre == "..."` table) and splits the text with a list of regular expressions, each
//! applied in turn to the pieces the previous one left: a match becomes a piece of its own and so
//! does the text between two matches ("isolated"). The pieces are then byte-level encoded (GPT-2's
//! byte-to-unicode map) and merged by BPE. The same thing in `tokenizers` is a `Sequence` of
//! `Split(regex, Isolated)` followed by `ByteLevel` without its own regex.
//!
//! Where llama.cpp rewrote a model's regex for its own engine (case-insensitive groups spelled
//! out, possessive quantifiers made greedy), the original from the model's `tokenizer.json`,
//! which llama.cpp quotes beside it, is used here: the original is what the vocabulary's merges were
//! learned with, and Oniguruma (the `tokenizers` regex engine) reads it as it is.
//!
//! `ignore_merges` is llama.cpp's flag of the same name (and `tokenizers`' BPE option): a whole
//! piece that is itself a token is taken as it is, without merging (Llama 3, Tekken, ...).

use anyhow::{bail, Result};

/// How a family splits text before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreTokenizer {
    /// The family's name in llama.cpp (`LLAMA_VOCAB_PRE_TYPE_*`, lower case).
    pub family: &'static str,
    /// Applied in order, each splitting every piece the previous ones left (isolated matches).
    pub regexes: &'static [&'static str],
    /// A piece that is a token as a whole is not merged from its bytes.
    pub ignore_merges: bool,
}

/// GPT-2's split, as `tokenizers`' ByteLevel pre-tokenizer spells it. llama.cpp drops the final
/// `|\s+`; the text it would match is left unmatched there, which makes it a piece all the same.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const JAIS2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    // Not a raw string: six characters are written as escapes because their canonical
    // equivalents (what text tools often turn them into) are other code points.
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1F7D}ᾀ-ᾴᾶ-ᾼ\u{1FBE}ῂ-ῄῆ-ῌῐ-\u{1FD3}ῖ-\u{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
];
const DEEPSEEK3_LLM: &[&str] = &[
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];
const SPARK2_5: &[&str] = &[
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+"##,
    r"\p{N}",
];
const YOUTU: &[&str] = &[
    r"[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];
const DEEPSEEK_CODER: &[&str] = &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"];
const FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)", r"[0-9][0-9][0-9]"];
const STARCODER: &[&str] = &[r"\p{N}", GPT2];
const BLOOM: &[&str] = &[r" ?[^(\s|.,!?…。，、।۔،)]+"];
const VIKING: &[&str] = &[r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"];
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const CHAMELEON: &[&str] = &[
    r"<sentinel:[0-9]+>",
    r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
    r"([\t\n]|    |  )",
    r"\p{N}",
    r"[\p{P}!-/:-@\[-`{-~]",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
];
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GRANITE_EMB_MULTI: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TINY_AYA: &[&str] = &[
    r"\d{1,3}(?=(?:\d{3})*\b)",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];
const BAILINGMOE: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const SEED_CODER: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const UFAKZEKA: &str = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LAGUNA: &[&str] = &[r"[^\n]+|[\n]+", QWEN2];
const EXAONE_MOE: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
const MINICPM5: &[&str] = &[r"\p{N}{1,3}", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"];
/// llama.cpp's "default" (also used for a GGUF without `tokenizer.ggml.pre`, with a warning
/// that generation quality will suffer).
const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)", r"\p{N}+", r"[0-9][0-9][0-9]"];

const fn pre(family: &'static str, regexes: &'static [&'static str], ignore_merges: bool) -> PreTokenizer {
    PreTokenizer { family, regexes, ignore_merges }
}

/// Every `tokenizer.ggml.pre` value llama.cpp accepts for a byte-level BPE vocabulary, and the
/// family it maps to. Names that need code of their own in llama.cpp are in [`UNSUPPORTED`].
pub const PRE_TOKENIZERS: &[(&[&str], PreTokenizer)] = &[
    (&["default"], pre("default", DEFAULT, false)),
    (&["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"], pre("llama3", &[LLAMA3], true)),
    (&["dbrx"], pre("dbrx", &[LLAMA3], false)),
    (&["smaug-bpe"], pre("smaug", &[LLAMA3], false)),
    (&["jais-2"], pre("jais2", &[JAIS2], false)),
    (&["deepseek-llm"], pre("deepseek_llm", DEEPSEEK_LLM, false)),
    (&["deepseek-coder"], pre("deepseek_coder", DEEPSEEK_CODER, false)),
    (&["deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"], pre("deepseek3_llm", DEEPSEEK3_LLM, false)),
    (&["spark2_5"], pre("spark2_5", SPARK2_5, false)),
    (&["youtu"], pre("youtu", YOUTU, true)),
    (&["falcon"], pre("falcon", FALCON, false)),
    (&["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"], pre("starcoder", STARCODER, false)),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        pre("gpt2", &[GPT2], false),
    ),
    (&["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"], pre("qwen2", &[QWEN2], false)),
    (&["qwen35"], pre("qwen35", &[QWEN35], false)),
    (&["poro-chat", "bloom", "gpt3-finnish"], pre("bloom", BLOOM, false)),
    (&["glm4", "chatglm-bpe"], pre("chatglm4", &[LLAMA3], false)),
    (&["viking"], pre("viking", VIKING, false)),
    (&["tekken"], pre("tekken", &[TEKKEN], true)),
    (&["chameleon"], pre("chameleon", CHAMELEON, false)),
    (&["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], pre("gpt4o", &[GPT4O], false)),
    (&["granite-embed-multi-97m"], pre("granite_emb_multi", &[GRANITE_EMB_MULTI], true)),
    (&["tiny_aya", "cohere2moe"], pre("tiny_aya", TINY_AYA, false)),
    (&["bailingmoe", "bailingmoe2", "llada-moe"], pre("bailingmoe", &[BAILINGMOE], false)),
    (&["seed-coder"], pre("seed_coder", &[SEED_CODER], false)),
    (&["ufakzeka"], pre("ufakzeka", &[UFAKZEKA], false)),
    (&["grok-2"], pre("grok_2", &[QWEN2], false)),
    (&["laguna"], pre("laguna", LAGUNA, false)),
    (&["exaone-moe"], pre("exaone_moe", &[EXAONE_MOE], false)),
    (&["minicpm5"], pre("minicpm5", MINICPM5, true)),
];

/// Names llama.cpp knows whose tokenizers are not a regex split plus byte-level BPE (hand-written
/// splitting, raw UTF-8 merges, zero-width splits): refused with their name rather than guessed.
pub const UNSUPPORTED: &[&str] = &["kimi-k2", "afmoe", "gemma4", "granite-embed-multi-311m", "sarvam-moe", "whitespace", "superbpe"];

/// The pre-tokenizer a GGUF names. A missing name is llama.cpp's "default"; an unknown one is an
/// error that names it (a silent GPT-2 split would tokenize most prompts differently).
pub fn for_gguf_name(name: Option<&str>) -> Result<PreTokenizer> {
    let name = name.map(str::trim).unwrap_or("default");
    let name = if name.is_empty() { "default" } else { name };
    if let Some((_, p)) = PRE_TOKENIZERS.iter().find(|(names, _)| names.contains(&name)) {
        return Ok(*p);
    }
    if UNSUPPORTED.contains(&name) {
        bail!(
            "the GGUF's pre-tokenizer {name:?} (tokenizer.ggml.pre) needs llama.cpp's own splitting code, which this \
             workbench does not have; put the model's tokenizer.json next to the .gguf file (same folder)"
        );
    }
    bail!(
        "the GGUF names an unknown pre-tokenizer {name:?} (tokenizer.ggml.pre); known: {}. Put the model's \
         tokenizer.json next to the .gguf file (same folder) to use its own",
        known_names().join(", ")
    )
}

/// Every accepted name, for messages and tests.
pub fn known_names() -> Vec<&'static str> {
    PRE_TOKENIZERS.iter().flat_map(|(names, _)| names.iter().copied()).collect()
}
