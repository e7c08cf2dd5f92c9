//! The ONNX Runtime backend: runs an onnxruntime-genai model folder (`genai_config.json`,
//! `model.onnx`, `model.onnx.data`, tokenizer files) through the `ort` bindings, on the CPU, CUDA
//! or DirectML execution provider, so that phiquant can check its ONNX artefacts in the runtime
//! they are made for.
//!
//! The graph's inputs and outputs are the ones `genai_config.json` names: `input_ids`,
//! `attention_mask`, `position_ids` when the graph has that input, and per layer a past key and
//! value in, a present key and value out; the cache may be fp32 or fp16, and so may the logits
//! (fp16 I/O is converted to and from f32 at the boundary). [`OrtSession`] keeps the cache
//! between calls; [`OrtModel::logits`] and [`OrtModel::generate`] are built on it.
//!
//! ONNX Runtime itself is a shared library loaded at run time (see [`find_ort_library`] for where
//! phiquant looks). The backend sits behind the `onnxruntime` feature; without it,
//! [`OrtModel::load`] returns an [`Error::Backend`] that says so, and the model type is
//! uninhabited.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::generate::Sampler;
use crate::{Error, Generation, Sampling, Tokenizer};

mod genai;
mod library;

#[cfg(feature = "onnxruntime")]
mod enabled;
#[cfg(feature = "onnxruntime")]
use self::enabled as imp;

#[cfg(not(feature = "onnxruntime"))]
mod disabled;
#[cfg(not(feature = "onnxruntime"))]
use self::disabled as imp;

pub use self::genai::{GENAI_CONFIG, GenaiConfig, GenaiNames, ProviderOptions};
pub use self::library::{
    LIBRARY_EXAMPLE, ORT_DYLIB_PATH, PHIQUANT_VENV, VENV_LIBRARY_PATTERN, find_ort_library,
};

/// The name the backend goes by in [`Error::Backend`].
pub(crate) const BACKEND: &str = "ONNX Runtime";

/// The execution provider an ONNX graph runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// ONNX Runtime's CPU provider (in every build of the library).
    Cpu,
    /// The CUDA provider (the `onnxruntime-gpu` library, with CUDA and cuDNN).
    Cuda,
    /// The DirectML provider (the `onnxruntime-directml` library, Windows only).
    #[serde(rename = "dml")]
    DirectMl,
}

impl Device {
    /// The name on the command line and in genai's `provider_options`: `cpu`, `cuda`, `dml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::DirectMl => "dml",
        }
    }
}

impl std::fmt::Display for Device {
    /// The provider's own name: `CPU`, `CUDA`, `DirectML`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "CPU",
            Device::Cuda => "CUDA",
            Device::DirectMl => "DirectML",
        })
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    /// `cpu`, `cuda`, or `dml` (also `directml`), in any case.
    fn from_str(s: &str) -> Result<Device, Error> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "dml" | "directml" => Ok(Device::DirectMl),
            _ => Err(Error::UnknownDevice { name: s.to_string() }),
        }
    }
}

/// A device and, for a GPU, which one: `cpu`, `cuda`, `cuda:1`, `dml:0`.
///
/// The index goes to the execution provider as its `device_id` (the CUDA and DirectML providers'
/// option), so that one process runs on one GPU: ONNX Runtime's recommended way to use several
/// GPUs is one process (one session) per GPU. Without an index the provider's default applies
/// (the folder's own `device_id` option, else GPU 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    /// The execution provider.
    pub device: Device,
    /// Which GPU (`None`: the provider's default). Always `None` for the CPU.
    pub index: Option<u32>,
}

impl DeviceSpec {
    /// The most GPUs an index may address (a bound on hostile input, far above real machines).
    pub const MAX_INDEX: u32 = 1023;
}

impl From<Device> for DeviceSpec {
    fn from(device: Device) -> DeviceSpec {
        DeviceSpec { device, index: None }
    }
}

impl std::fmt::Display for DeviceSpec {
    /// As on the command line: `cpu`, `cuda`, `cuda:1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}:{i}", self.device.as_str()),
            None => f.write_str(self.device.as_str()),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu`, `cuda`, `dml`, or a GPU with its index: `cuda:1`, `dml:0`.
    fn from_str(s: &str) -> Result<DeviceSpec, Error> {
        let Some((name, index)) = s.split_once(':') else {
            return Ok(DeviceSpec { device: s.parse()?, index: None });
        };
        let device: Device = name.parse()?;
        let bad = |expected: &str| Error::UnknownDevice { name: format!("{s} ({expected})") };
        if device == Device::Cpu {
            return Err(bad("the CPU takes no index"));
        }
        let index: u32 = match index.parse() {
            Ok(i) if i <= DeviceSpec::MAX_INDEX && !index.starts_with('+') => i,
            _ => return Err(bad("the index after `:` is a GPU number, 0 to 1023")),
        };
        Ok(DeviceSpec { device, index: Some(index) })
    }
}

/// Whether `path` is an onnxruntime-genai model folder: a directory with a `genai_config.json`.
pub fn is_onnx_folder(path: &Path) -> bool {
    path.is_dir() && path.join(GENAI_CONFIG).is_file()
}

/// An onnxruntime-genai model folder loaded into one ONNX Runtime session.
///
/// Calls run one at a time on the session (ONNX Runtime's `Run` is not reentrant for every
/// provider), each with its own cache, so calls are independent of one another and the model is
/// `Send` and `Sync`.
#[derive(Debug)]
pub struct OrtModel {
    inner: imp::Model,
    config: GenaiConfig,
    dir: PathBuf,
    device: DeviceSpec,
}

impl OrtModel {
    /// Loads the model folder `dir` to run on `device` (`None`: the device its
    /// `genai_config.json` names, the CPU when it names none) with `threads` CPU threads (0: as
    /// many as rayon's pool has).
    ///
    /// A missing library, a provider this machine's ONNX Runtime lacks, and a graph whose inputs
    /// and outputs are not the ones `genai_config.json` names are errors that say so.
    pub fn load(dir: &Path, device: Option<Device>, threads: usize) -> Result<OrtModel, Error> {
        OrtModel::load_on(dir, device.map(DeviceSpec::from), threads)
    }

    /// As [`OrtModel::load`], on a device that may name a GPU by its index (`cuda:1`), passed to
    /// the execution provider as its `device_id`.
    pub fn load_on(
        dir: &Path,
        device: Option<DeviceSpec>,
        threads: usize,
    ) -> Result<OrtModel, Error> {
        let config = GenaiConfig::from_dir(dir)?;
        let device = match device {
            Some(device) => device,
            None => config.device()?.into(),
        };
        let graph = dir.join(&config.filename);
        if !graph.is_file() {
            return Err(Error::Io {
                op: "opening",
                path: graph,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let threads = if threads == 0 { rayon::current_num_threads() } else { threads };
        let inner = imp::Model::load(&graph, &config, device, threads)?;
        Ok(OrtModel { inner, config, dir: dir.to_path_buf(), device })
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `genai_config.json` says.
    pub fn config(&self) -> &GenaiConfig {
        &self.config
    }

    /// The execution provider the session runs on.
    pub fn device(&self) -> Device {
        self.device.device
    }

    /// The execution provider and the GPU index it was asked for.
    pub fn device_spec(&self) -> DeviceSpec {
        self.device
    }

    /// The length of each row of logits.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// The most positions one sequence may use (`context_length`).
    pub fn context_length(&self) -> usize {
        self.config.context_length
    }

    /// The tokens that end generation (`eos_token_id`).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.config.eos_token_ids
    }

    /// The folder's tokenizer (`tokenizer.json`), with BOS as its `tokenizer_config.json` says
    /// and `bos_token_id` from `genai_config.json`.
    pub fn tokenizer(&self) -> Result<Tokenizer, Error> {
        Tokenizer::from_dir(&self.dir, self.config.bos_token_id)
    }

    /// An empty sequence with its own key/value cache.
    pub fn session(&self) -> Result<OrtSession<'_>, Error> {
        Ok(OrtSession { model: self, cache: self.inner.new_cache()?, len: 0, logits: Vec::new() })
    }

    /// The logits at every position of `tokens` (positions `0..n`, one pass from an empty
    /// cache): a row-major `[tokens.len(), vocab_size()]` matrix.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        let mut session = self.session()?;
        session.forward(tokens)?;
        Ok(std::mem::take(&mut session.logits))
    }

    /// Generates up to `max_tokens` tokens after `prompt` with the key/value cache, stopping
    /// after any id in `stop` (which is included), as [`crate::generate_timed`] does on the
    /// native engine.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        sampling: &Sampling,
        stop: &[u32],
    ) -> Result<Generation, Error> {
        let mut sampler = Sampler::new(sampling, self.vocab_size())?;
        if prompt.is_empty() {
            return Err(Error::empty_prompt());
        }
        if max_tokens == 0 {
            return Ok(Generation { token_ids: Vec::new(), prefill_secs: 0.0, decode_secs: 0.0 });
        }
        let needed = prompt.len().saturating_add(max_tokens.saturating_sub(1));
        if needed > self.context_length() {
            return Err(Error::ContextFull { needed, capacity: self.context_length() });
        }
        let mut session = self.session()?;
        let mut out = Vec::with_capacity(max_tokens.min(self.context_length()));
        let start = std::time::Instant::now();
        let vocab = self.vocab_size();
        let mut next = {
            let logits = session.forward(prompt)?;
            sampler.pick(&logits[logits.len() - vocab..])
        };
        let prefill_secs = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        while out.len() < max_tokens {
            out.push(next);
            if stop.contains(&next) || out.len() == max_tokens {
                break;
            }
            next = sampler.pick(session.forward(&[next])?);
        }
        Ok(Generation { token_ids: out, prefill_secs, decode_secs: start.elapsed().as_secs_f64() })
    }
}

/// One sequence on an [`OrtModel`]: the key/value cache of the positions processed so far.
pub struct OrtSession<'m> {
    model: &'m OrtModel,
    cache: imp::Cache,
    len: usize,
    logits: Vec<f32>,
}

impl std::fmt::Debug for OrtSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtSession")
            .field("model", &self.model.dir)
            .field("len", &self.len)
            .finish()
    }
}

impl OrtSession<'_> {
    /// Positions processed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been processed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.cache = self.model.inner.new_cache()?;
        self.len = 0;
        Ok(())
    }

    /// Appends `tokens` to the sequence (one run of the graph, with the cache as its past) and
    /// returns their logits, row-major `[tokens.len(), vocab]`.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<&[f32], Error> {
        let vocab_size = self.model.vocab_size();
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(Error::TokenOutOfRange { token, vocab_size });
        }
        let needed = self.len.saturating_add(tokens.len());
        let capacity = self.model.context_length();
        if needed > capacity {
            return Err(Error::ContextFull { needed, capacity });
        }
        if tokens.is_empty() {
            self.logits.clear();
            return Ok(&self.logits);
        }
        self.model.inner.step(&mut self.cache, tokens, self.len, &mut self.logits)?;
        self.len = needed;
        Ok(&self.logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        for (name, device) in
            [("cpu", Device::Cpu), ("CUDA", Device::Cuda), ("dml", Device::DirectMl)]
        {
            assert_eq!(name.parse::<Device>().unwrap(), device);
            assert_eq!(device.as_str(), name.to_ascii_lowercase());
        }
        assert_eq!("directml".parse::<Device>().unwrap(), Device::DirectMl);
        assert_eq!(Device::DirectMl.to_string(), "DirectML");
        assert_eq!(
            "tpu".parse::<Device>().unwrap_err().to_string(),
            "unknown device `tpu` (expected cpu, cuda or dml)"
        );
    }

    #[test]
    fn device_specs() {
        let spec = |s: &str| s.parse::<DeviceSpec>();
        assert_eq!(spec("cpu").unwrap(), DeviceSpec { device: Device::Cpu, index: None });
        assert_eq!(spec("cuda").unwrap(), Device::Cuda.into());
        assert_eq!(spec("cuda:1").unwrap(), DeviceSpec { device: Device::Cuda, index: Some(1) });
        assert_eq!(spec("DML:0").unwrap(), DeviceSpec { device: Device::DirectMl, index: Some(0) });
        assert_eq!(spec("cuda:1").unwrap().to_string(), "cuda:1");
        assert_eq!(spec("dml").unwrap().to_string(), "dml");
        for bad in ["cpu:0", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda:1024", "tpu:0", ""] {
            let err = spec(bad).unwrap_err().to_string();
            assert!(err.starts_with("unknown device"), "{bad}: {err}");
        }
        assert!(spec("cuda:99999999999").is_err());
    }
}
