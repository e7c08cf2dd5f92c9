//! `phiquant inspect`: what a checkpoint (or a GGUF file) holds and which targets fit it.

use std::{collections::BTreeMap, fmt};

use phiquant_runtime::{
    AuxFiles, Biases, Checkpoint, DecoderSpec, SlidingWindow, TokenizerSummary, WeightSource,
    gguf::{GgmlType, GgufModel},
};
use serde::Serialize;

use crate::{
    Error, GroupFit, ModelKind, Origin, ResolvedModel, TARGETS, TargetFit, group_fits, target_fit,
};

/// Version of the JSON layout of [`InspectReport`].
pub const INSPECT_SCHEMA_VERSION: u32 = 1;

/// Everything `phiquant inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// Layout version of this JSON object.
    pub schema_version: u32,
    /// Where the model came from.
    pub source: Origin,
    /// The transformers class.
    pub architecture: &'static str,
    /// Parameters stored (a tied LM head counted once).
    pub parameters: u64,
    /// Decoder layers.
    pub layers: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Vocabulary rows.
    pub vocab_size: usize,
    /// Whether the LM head is the embedding.
    pub tied_embeddings: bool,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// Pre-training context.
    pub original_context: usize,
    /// Rotary embedding.
    pub rope: RopeReport,
    /// Sliding-window attention.
    pub sliding_window: Option<SlidingWindow>,
    /// `fused` (Phi-3) or `separate` q/k/v and gate/up.
    pub qkv_layout: &'static str,
    /// Bias vectors.
    pub biases: Biases,
    /// Tensors, parameters and bytes per stored dtype.
    pub dtypes: Vec<DtypeUsage>,
    /// Bytes of weight data.
    pub weight_bytes: u64,
    /// The weight files.
    pub files: Vec<FileReport>,
    /// Tensors in the files that hold no weights of the model.
    pub ignored_tensors: Vec<String>,
    /// The tokenizer, when `tokenizer.json` is present.
    pub tokenizer: Option<TokenizerSummary>,
    /// How each `MatMulNBits` group size fits.
    pub group_sizes: Vec<GroupFit>,
    /// How each target fits.
    pub targets: Vec<TargetFit>,
}

/// Rotary embedding, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RopeReport {
    /// `default`, `linear`, `llama3` or `longrope`.
    pub kind: &'static str,
    /// Base theta.
    pub theta: f64,
    /// Rotated dimensions per head.
    pub rotary_dim: usize,
    /// `rotary_dim / head_dim`.
    pub partial_rotary_factor: f64,
}

/// Usage of one dtype.
#[derive(Debug, Clone, Serialize)]
pub struct DtypeUsage {
    /// The dtype: a safetensors name (`F32`, `F16`, `BF16`), or for a GGUF file llama.cpp's type
    /// name (`Q4_K`, `Q6_K`, ...).
    pub dtype: String,
    /// Tensors stored in it.
    pub tensors: usize,
    /// Their elements.
    pub parameters: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One weight file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Opens the checkpoint in `model.dir` (or the GGUF file), checks it completely and describes
/// it. A GGUF file is described as the model phiquant rebuilds from it: the spec from its
/// metadata, the tokenizer from its `tokenizer.ggml.*` keys, and its tensors by llama.cpp type.
pub fn inspect(model: &ResolvedModel) -> Result<InspectReport, Error> {
    let mut usage: BTreeMap<String, DtypeUsage> = BTreeMap::new();
    let mut count = |dtype: &str, numel: u64, bytes: u64| {
        let u = usage.entry(dtype.to_string()).or_insert(DtypeUsage {
            dtype: dtype.to_string(),
            tensors: 0,
            parameters: 0,
            bytes: 0,
        });
        u.tensors += 1;
        u.parameters += numel;
        u.bytes += bytes;
    };
    let file_report = |path: &std::path::Path| -> Result<FileReport, Error> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::metadata(path).map(|m| m.len()).map_err(|source| Error::Io {
            op: "reading metadata of",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileReport { name, bytes })
    };
    let (spec, files, ignored, tokenizer): (DecoderSpec, _, _, _) = match model.kind {
        ModelKind::Checkpoint => {
            let ckpt = Checkpoint::open(&model.dir)?;
            for t in ckpt.tensor_infos() {
                count(t.dtype.name(), t.numel() as u64, t.byte_len());
            }
            let files = ckpt
                .files()
                .iter()
                .map(|f| file_report(f.path()))
                .collect::<Result<Vec<_>, Error>>()?;
            let tokenizer = TokenizerSummary::from_dir(&model.dir)?;
            (ckpt.spec().clone(), files, ckpt.ignored().to_vec(), tokenizer)
        }
        ModelKind::Gguf => {
            let gguf = GgufModel::open(&model.dir)?;
            let file = gguf.file();
            for t in file.tensors().iter().filter(|t| !t.name.starts_with("rope_factors_")) {
                count(GgmlType::name_of(t.type_id), t.numel(), t.nbytes);
            }
            let aux = AuxFiles::from_gguf(file, gguf.spec())?;
            let tokenizer = TokenizerSummary::from_files(&aux)?;
            (gguf.spec().clone(), vec![file_report(&model.dir)?], Vec::new(), tokenizer)
        }
    };
    let spec = &spec;
    let dtypes: Vec<DtypeUsage> = usage.into_values().collect();
    Ok(InspectReport {
        schema_version: INSPECT_SCHEMA_VERSION,
        source: model.origin.clone(),
        architecture: spec.architecture.class_name(),
        parameters: dtypes.iter().map(|d| d.parameters).sum(),
        layers: spec.num_layers,
        hidden_size: spec.hidden_size,
        intermediate_size: spec.intermediate_size,
        heads: spec.num_heads,
        kv_heads: spec.num_kv_heads,
        head_dim: spec.head_dim,
        vocab_size: spec.vocab_size,
        tied_embeddings: spec.tied_embeddings,
        max_position_embeddings: spec.max_position_embeddings,
        original_context: spec.original_context(),
        rope: RopeReport {
            kind: spec.rope.scaling.kind(),
            theta: spec.rope.theta,
            rotary_dim: spec.rope.rotary_dim,
            partial_rotary_factor: spec.rope.rotary_dim as f64 / spec.head_dim as f64,
        },
        sliding_window: spec.sliding_window,
        qkv_layout: if spec.architecture.is_fused() { "fused" } else { "separate" },
        biases: spec.biases,
        weight_bytes: dtypes.iter().map(|d| d.bytes).sum(),
        dtypes,
        files,
        ignored_tensors: ignored,
        tokenizer,
        group_sizes: group_fits(spec),
        targets: TARGETS.iter().map(|t| target_fit(t, spec)).collect(),
    })
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Origin::Local { path } => path.display().to_string(),
            Origin::Hub { repo, revision, commit, .. } => {
                format!("{repo}@{revision} (commit {commit})")
            }
        };
        writeln!(f, "model         {source}")?;
        writeln!(f, "architecture  {}", self.architecture)?;
        writeln!(f, "parameters    {}", thousands(self.parameters))?;
        writeln!(
            f,
            "dims          {} layers, hidden {}, ffn {}, {} heads / {} kv heads of {}, vocab {}",
            self.layers,
            self.hidden_size,
            self.intermediate_size,
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.vocab_size
        )?;
        writeln!(
            f,
            "embeddings    {}",
            if self.tied_embeddings { "tied (LM head = embedding)" } else { "separate LM head" }
        )?;
        writeln!(
            f,
            "rope          {}, theta {}, rotary dim {} of {}; context {} (original {})",
            self.rope.kind,
            self.rope.theta,
            self.rope.rotary_dim,
            self.head_dim,
            self.max_position_embeddings,
            self.original_context
        )?;
        if let Some(w) = self.sliding_window {
            writeln!(f, "sliding window {} (from layer {})", w.size, w.first_layer)?;
        }
        let b = self.biases;
        let biases: Vec<&str> = [(b.qkv, "qkv"), (b.o, "o"), (b.mlp, "mlp")]
            .iter()
            .filter(|x| x.0)
            .map(|x| x.1)
            .collect();
        writeln!(
            f,
            "layout        {} q/k/v and gate/up; biases: {}",
            self.qkv_layout,
            if biases.is_empty() { "none".to_string() } else { biases.join(", ") }
        )?;
        for d in &self.dtypes {
            writeln!(
                f,
                "dtype         {}: {} tensors, {} parameters, {}",
                d.dtype,
                d.tensors,
                thousands(d.parameters),
                bytes(d.bytes)
            )?;
        }
        let names: Vec<&str> = self.files.iter().map(|x| x.name.as_str()).collect();
        writeln!(
            f,
            "files         {} ({})",
            names.join(", "),
            bytes(self.files.iter().map(|x| x.bytes).sum())
        )?;
        if !self.ignored_tensors.is_empty() {
            writeln!(f, "ignored       {}", self.ignored_tensors.join(", "))?;
        }
        match &self.tokenizer {
            Some(t) => writeln!(
                f,
                "tokenizer     {}, {} tokens, add_bos {}, chat template {}",
                t.kind,
                t.vocab_size,
                t.add_bos_token.map_or("unset".to_string(), |b| b.to_string()),
                if t.chat_template { "yes" } else { "no" }
            )?,
            None => writeln!(f, "tokenizer     none (no tokenizer.json)")?,
        }
        let groups: Vec<String> = self
            .group_sizes
            .iter()
            .map(|g| {
                if g.exact {
                    format!("{} exact", g.group_size)
                } else {
                    format!("{} padded ({})", g.group_size, g.padded_matrices)
                }
            })
            .collect();
        writeln!(f, "group sizes   {}", groups.join(", "))?;
        writeln!(f, "targets")?;
        for t in &self.targets {
            writeln!(f, "  {:<12} {:<8} {}", t.target, t.status, t.detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(260_032), "260,032");
        assert_eq!(thousands(12), "12");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(bytes(1_044_992), "1020.5 KiB");
        assert_eq!(bytes(100), "100 B");
    }
}
