//! The ONNX Runtime backend proper, through the `ort` bindings with the library loaded at run
//! time.
//!
//! Two facts of those bindings shape this file. The library can be loaded, and the environment
//! built, only once per process, so both live in a `OnceLock` (a failure is kept and returned to
//! every later caller). And `Session::run` takes `&mut self` (some providers' allocators are not
//! thread-safe), so the session sits behind a mutex.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use half::f16;
use half::slice::HalfFloatSliceExt;
use ort::environment::Environment;
use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};
use ort::logging::LogLevel;
use ort::session::builder::{BuilderResult, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use super::library::LibrarySearch;
use super::{BACKEND, Device, DeviceSpec, GenaiConfig};
use crate::{Error, OrtLibraryProblem};

/// The process's ONNX Runtime environment and the library it came from, or why there is none.
fn environment() -> Result<&'static (Environment, PathBuf), Error> {
    static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf), OrtLibraryProblem>> =
        OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let path = match LibrarySearch::from_env().find() {
                Ok(path) => path,
                Err(Error::OrtLibrary(problem)) => return Err(problem),
                Err(other) => unreachable!("the library search returns OrtLibrary errors: {other}"),
            };
            let load = |message: String| OrtLibraryProblem::Load { path: path.clone(), message };
            let env = ort::init_from(&path)
                .map_err(|e| load(e.to_string()))?
                .with_name("phiquant")
                .with_telemetry(false)
                .build()
                .map_err(|e| load(e.to_string()))?;
            // ONNX Runtime logs errors to stderr as well as returning them; phiquant reports the
            // returned ones, so the log stays quiet unless ORT_LOG (the `ort` crate's variable:
            // fatal, error, warning, info, verbose) asks for it.
            if std::env::var_os("ORT_LOG").is_none() {
                env.set_log_level(LogLevel::Fatal);
            }
            Ok((env, path))
        })
        .as_ref()
        .map_err(|problem| Error::OrtLibrary(problem.clone()))
}

/// Integer element types the id, mask and position inputs may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntType {
    I64,
    I32,
}

/// Float element types the cache and the logits may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloatType {
    F32,
    F16,
}

/// An integer input: its name and element type.
#[derive(Debug, Clone)]
struct IntInput {
    name: String,
    ty: IntType,
}

/// The graph's inputs and outputs, as found in the session and checked against the config.
#[derive(Debug)]
struct Io {
    input_ids: IntInput,
    attention_mask: Option<IntInput>,
    position_ids: Option<IntInput>,
    /// Past keys and values, interleaved: layer 0 key, layer 0 value, layer 1 key, ...
    past: Vec<String>,
    /// Present keys and values, in the order of `past`.
    present: Vec<String>,
    cache_type: FloatType,
    logits: String,
    logits_type: FloatType,
    kv_heads: usize,
    head_size: usize,
    vocab_size: usize,
}

/// A loaded model.
#[derive(Debug)]
pub(crate) struct Model {
    session: Mutex<Session>,
    path: PathBuf,
    io: Io,
}

/// The key/value cache of one sequence: the present outputs of the last run, in the order of
/// [`Io::past`], each `[1, kv_heads, positions, head_size]`.
pub(crate) struct Cache {
    past: Vec<DynValue>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("tensors", &self.past.len()).finish()
    }
}

impl Model {
    pub(crate) fn load(
        path: &Path,
        config: &GenaiConfig,
        device: DeviceSpec,
        threads: usize,
    ) -> Result<Model, Error> {
        let fail =
            |message: String| Error::Backend { backend: BACKEND, path: path.into(), message };
        let (env, library) = environment()?;
        let option =
            |e: ort::Error<SessionBuilder>| fail(format!("cannot set the session options: {e}"));
        let builder = Session::builder(env)
            .map_err(|e| fail(format!("cannot create a session builder: {e}")))?
            .with_intra_threads(threads)
            .map_err(option)?
            .with_inter_threads(1)
            .map_err(option)?
            .with_parallel_execution(false)
            .map_err(option)?
            .with_deterministic_compute(true)
            .map_err(option)?;
        let mut builder = with_provider(builder, path, library, config, device)?;
        let session = builder
            .commit_from_file(path)
            .map_err(|e| fail(format!("cannot create a session: {e}")))?;
        let io = Io::check(&session, config).map_err(fail)?;
        Ok(Model { session: Mutex::new(session), path: path.to_path_buf(), io })
    }

    /// A backend error about this model.
    fn fail(&self, message: String) -> Error {
        Error::Backend { backend: BACKEND, path: self.path.clone(), message }
    }

    pub(crate) fn new_cache(&self) -> Result<Cache, Error> {
        let shape = [1, self.io.kv_heads as i64, 0, self.io.head_size as i64];
        let past = self
            .io
            .past
            .iter()
            .map(|_| match self.io.cache_type {
                FloatType::F32 => {
                    Tensor::from_array((shape, Vec::<f32>::new())).map(|t| t.into_dyn())
                }
                FloatType::F16 => {
                    Tensor::from_array((shape, Vec::<f16>::new())).map(|t| t.into_dyn())
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(format!("cannot create an empty cache: {e}")))?;
        Ok(Cache { past })
    }

    /// Runs `tokens` at positions `past..past + tokens.len()` with `cache` as the past, replacing
    /// it with the present and `logits` with the tokens' logits. The caller checked the ids and
    /// the context length, and that `tokens` is not empty.
    pub(crate) fn step(
        &self,
        cache: &mut Cache,
        tokens: &[u32],
        past: usize,
        logits: &mut Vec<f32>,
    ) -> Result<(), Error> {
        let io = &self.io;
        let n = tokens.len();
        let total = past + n;
        let what = || format!("running {n} tokens from position {past}");
        let tensor_err = |e: ort::Error| self.fail(format!("{}: {e}", what()));
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + io.past.len());
        let ids = tokens.iter().map(|&t| i64::from(t));
        let ids = int_tensor(io.input_ids.ty, n, ids).map_err(tensor_err)?;
        inputs.push((io.input_ids.name.as_str().into(), ids));
        if let Some(mask) = &io.attention_mask {
            let ones = std::iter::repeat_n(1, total);
            let mask_tensor = int_tensor(mask.ty, total, ones).map_err(tensor_err)?;
            inputs.push((mask.name.as_str().into(), mask_tensor));
        }
        if let Some(pos) = &io.position_ids {
            let positions = (past..total).map(|p| p as i64);
            let pos_tensor = int_tensor(pos.ty, n, positions).map_err(tensor_err)?;
            inputs.push((pos.name.as_str().into(), pos_tensor));
        }
        for (name, value) in io.past.iter().zip(&cache.past) {
            inputs.push((name.as_str().into(), value.into()));
        }
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let mut outputs = session.run(inputs).map_err(tensor_err)?;

        let value = outputs
            .get(&io.logits)
            .ok_or_else(|| self.fail(format!("{}: no output `{}`", what(), io.logits)))?;
        let rows = match io.logits_type {
            FloatType::F32 => {
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(tensor_err)?;
                self.check_logits(shape, n)?;
                logits.clear();
                logits.extend_from_slice(data);
                data.len()
            }
            FloatType::F16 => {
                let (shape, data) = value.try_extract_tensor::<f16>().map_err(tensor_err)?;
                self.check_logits(shape, n)?;
                logits.resize(data.len(), 0.0);
                data.convert_to_f32_slice(logits);
                data.len()
            }
        };
        debug_assert_eq!(rows, n * io.vocab_size);

        let mut present = Vec::with_capacity(io.present.len());
        for name in &io.present {
            let value = outputs
                .remove(name)
                .ok_or_else(|| self.fail(format!("{}: no output `{name}`", what())))?;
            let dims: Vec<i64> = match value.dtype() {
                ValueType::Tensor { shape, .. } => shape.iter().copied().collect(),
                other => {
                    return Err(self.fail(format!("{}: `{name}` is {other}, not a tensor", what())));
                }
            };
            let expected = [1, io.kv_heads as i64, total as i64, io.head_size as i64];
            if dims != expected {
                return Err(self.fail(format!(
                    "{}: `{name}` has shape {dims:?}, expected {expected:?} (a graph that shares \
                     past and present buffers is not supported)",
                    what()
                )));
            }
            present.push(value);
        }
        cache.past = present;
        Ok(())
    }

    /// Checks the shape of the logits of `n` tokens.
    fn check_logits(&self, shape: &ort::value::Shape, n: usize) -> Result<(), Error> {
        let expected = [1, n as i64, self.io.vocab_size as i64];
        if shape[..] != expected {
            return Err(self.fail(format!(
                "output `{}` has shape {:?}, expected {expected:?} (logits for every position)",
                self.io.logits,
                &shape[..]
            )));
        }
        Ok(())
    }
}

/// An integer tensor `[1, len]` of `values` as `ty`.
fn int_tensor(
    ty: IntType,
    len: usize,
    values: impl Iterator<Item = i64>,
) -> ort::Result<SessionInputValue<'static>> {
    let shape = [1, len as i64];
    let tensor = match ty {
        IntType::I64 => Tensor::from_array((shape, values.collect::<Vec<i64>>()))?.into_dyn(),
        // Ids, positions and masks fit an i32: they were checked against the vocabulary and the
        // context length, both below 2^27.
        IntType::I32 => {
            let values = values.map(|v| v as i32).collect::<Vec<i32>>();
            Tensor::from_array((shape, values))?.into_dyn()
        }
    };
    Ok(tensor.into())
}

/// `builder` with the execution provider of `device` registered (nothing for the CPU, which is
/// always there), or an [`Error::DeviceUnavailable`] that says why it cannot be. A GPU index
/// becomes the provider's `device_id`, over any the folder's `provider_options` give.
fn with_provider(
    builder: SessionBuilder,
    path: &Path,
    library: &Path,
    config: &GenaiConfig,
    spec: DeviceSpec,
) -> Result<SessionBuilder, Error> {
    let DeviceSpec { device, index } = spec;
    let unavailable =
        |reason: String| Error::DeviceUnavailable { path: path.to_path_buf(), device, reason };
    let registered = |result: BuilderResult| {
        result.map_err(|e| unavailable(format!("registering it failed: {e}")))
    };
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda => {
            if !ep::CUDA::is_available().unwrap_or(false) {
                return Err(unavailable(format!(
                    "the ONNX Runtime library {} was built without it (the onnxruntime-gpu \
                     package's library has it)",
                    library.display()
                )));
            }
            // The graph's own CUDA options (`enable_cuda_graph`, ...) are CUDA provider options.
            let mut cuda = ep::CUDA::default();
            for (key, value) in config.provider_options("cuda").into_iter().flatten() {
                cuda = cuda.with_arbitrary_config(key, value);
            }
            if let Some(index) = index {
                // At most DeviceSpec::MAX_INDEX, so it fits an i32.
                cuda = cuda.with_device_id(index as i32);
            }
            registered(builder.with_execution_providers([cuda.build().error_on_failure()]))
        }
        Device::DirectMl => {
            if !cfg!(windows) {
                return Err(unavailable(
                    "DirectML exists only on Windows (the onnxruntime-directml package)".into(),
                ));
            }
            if !ep::DirectML::is_available().unwrap_or(false) {
                return Err(unavailable(format!(
                    "the ONNX Runtime library {} was built without it (the onnxruntime-directml \
                     package's library has it)",
                    library.display()
                )));
            }
            // The DirectML provider supports neither memory patterns nor parallel execution
            // (ONNX Runtime's DirectML-ExecutionProvider documentation). genai's `dml` options
            // (`enable_graph_capture`) are genai's own, not the provider's.
            let builder = builder
                .with_memory_pattern(false)
                .map_err(|e| unavailable(format!("cannot turn memory patterns off: {e}")))?;
            let mut dml = ep::DirectML::default();
            if let Some(index) = index {
                dml = dml.with_device_id(index as i32);
            }
            registered(builder.with_execution_providers([dml.build().error_on_failure()]))
        }
    }
}

impl Io {
    /// Matches the session's inputs and outputs with the names in `config`, and checks their
    /// element types and every dimension the graph fixes.
    fn check(session: &Session, config: &GenaiConfig) -> Result<Io, String> {
        let names = &config.names;
        let layers = config.num_layers;
        let past = config.past_names();
        let present = config.present_names();

        let mut input_ids = None;
        let mut attention_mask = None;
        let mut position_ids = None;
        let mut cache_type = None;
        let mut past_seen = vec![false; past.len()];
        for input in session.inputs() {
            let name = input.name();
            let (ty, dims) = tensor_type(input.dtype(), "input", name)?;
            let int_input = || -> Result<IntInput, String> {
                let ty = match ty {
                    TensorElementType::Int64 => IntType::I64,
                    TensorElementType::Int32 => IntType::I32,
                    other => return Err(format!("input `{name}` is {other}, expected int64")),
                };
                Ok(IntInput { name: name.to_string(), ty })
            };
            if name == names.input_ids {
                input_ids = Some(int_input()?);
            } else if name == names.attention_mask {
                attention_mask = Some(int_input()?);
            } else if name == names.position_ids {
                position_ids = Some(int_input()?);
            } else if let Some(i) = past.iter().position(|p| p == name) {
                let ty = float_type(ty, "input", name)?;
                if cache_type.is_some_and(|t| t != ty) {
                    return Err(format!(
                        "input `{name}` differs in type from the other past inputs"
                    ));
                }
                cache_type = Some(ty);
                check_cache_dims(&dims, config, "input", name)?;
                past_seen[i] = true;
            } else {
                return Err(format!(
                    "input `{name}` is none of those genai_config.json names ({}, {}, {}, {}, {})",
                    names.input_ids,
                    names.attention_mask,
                    names.position_ids,
                    names.past_key_names,
                    names.past_value_names
                ));
            }
        }
        let input_ids =
            input_ids.ok_or_else(|| format!("the graph has no input `{}`", names.input_ids))?;
        if let Some(i) = past_seen.iter().position(|seen| !seen) {
            return Err(format!(
                "the graph has no input `{}` (genai_config.json gives {layers} layers)",
                past[i]
            ));
        }
        let cache_type = cache_type.unwrap_or(FloatType::F32);

        let output = |wanted: &str| {
            session
                .outputs()
                .iter()
                .find(|o| o.name() == wanted)
                .ok_or_else(|| format!("the graph has no output `{wanted}`"))
                .and_then(|o| tensor_type(o.dtype(), "output", wanted))
        };
        let (ty, dims) = output(&names.logits)?;
        let logits_type = float_type(ty, "output", &names.logits)?;
        if dims.len() != 3 || dims[2] >= 0 && dims[2] != config.vocab_size as i64 {
            return Err(format!(
                "output `{}` has shape {dims:?}, expected [batch, sequence, {}]",
                names.logits, config.vocab_size
            ));
        }
        for name in &present {
            let (ty, dims) = output(name)?;
            if float_type(ty, "output", name)? != cache_type {
                return Err(format!("output `{name}` differs in type from the past inputs"));
            }
            check_cache_dims(&dims, config, "output", name)?;
        }
        Ok(Io {
            input_ids,
            attention_mask,
            position_ids,
            past,
            present,
            cache_type,
            logits: names.logits.clone(),
            logits_type,
            kv_heads: config.num_kv_heads,
            head_size: config.head_size,
            vocab_size: config.vocab_size,
        })
    }
}

/// The element type and dimensions (-1 where dynamic) of a tensor input or output.
fn tensor_type(
    dtype: &ValueType,
    kind: &str,
    name: &str,
) -> Result<(TensorElementType, Vec<i64>), String> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => Ok((*ty, shape.iter().copied().collect())),
        other => Err(format!("{kind} `{name}` is {other}, not a tensor")),
    }
}

fn float_type(ty: TensorElementType, kind: &str, name: &str) -> Result<FloatType, String> {
    match ty {
        TensorElementType::Float32 => Ok(FloatType::F32),
        TensorElementType::Float16 => Ok(FloatType::F16),
        other => Err(format!("{kind} `{name}` is {other}, expected float32 or float16")),
    }
}

/// Checks a cache tensor's declared shape `[batch, kv_heads, positions, head_size]` against the
/// config, where the graph fixes a dimension.
fn check_cache_dims(
    dims: &[i64],
    config: &GenaiConfig,
    kind: &str,
    name: &str,
) -> Result<(), String> {
    let fits = |dim: i64, want: usize| dim < 0 || dim == want as i64;
    if dims.len() != 4 || !fits(dims[1], config.num_kv_heads) || !fits(dims[3], config.head_size) {
        return Err(format!(
            "{kind} `{name}` has shape {dims:?}, expected [batch, {}, positions, {}] \
             (num_key_value_heads and head_size in genai_config.json)",
            config.num_kv_heads, config.head_size
        ));
    }
    Ok(())
}
