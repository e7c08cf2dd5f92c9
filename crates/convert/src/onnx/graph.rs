//! A small ONNX graph builder: nodes, typed values, `/model/constants/...` constants made on first
//! use (the onnxruntime-genai builder's naming, so graphs compare node for node), and initializers
//! streamed into one external data file as they are made.

use std::{
    collections::{BTreeMap, HashSet},
    io::Write,
};

use super::proto::{
    AttributeProto, DATA_LOCATION_EXTERNAL, Dimension, GraphProto, NodeProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor,
    ValueInfoProto, attribute_type, data_type,
};
use crate::Error;

/// A dimension of a value's shape: fixed or symbolic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic name such as `batch_size`.
    Named(String),
}

impl From<usize> for Dim {
    fn from(v: usize) -> Dim {
        Dim::Fixed(v as i64)
    }
}

impl From<&str> for Dim {
    fn from(v: &str) -> Dim {
        Dim::Named(v.to_string())
    }
}

impl From<String> for Dim {
    fn from(v: String) -> Dim {
        Dim::Named(v)
    }
}

/// A node attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// An int64.
    Int(i64),
    /// A float.
    Float(f32),
    /// A string.
    Str(String),
    /// Int64s.
    Ints(Vec<i64>),
    /// A tensor (Constant nodes).
    Tensor(TensorProto),
    /// A subgraph (If branches).
    Graph(GraphProto),
}

/// A typed value description for graph inputs, outputs and `value_info`.
pub fn value_info(name: &str, elem_type: i32, shape: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(v) => {
                                Dimension { dim_value: Some(*v), ..Default::default() }
                            }
                            Dim::Named(n) => {
                                Dimension { dim_param: Some(n.clone()), ..Default::default() }
                            }
                        })
                        .collect(),
                }),
            }),
            denotation: None,
        }),
        doc_string: None,
    }
}

/// An attribute message.
pub fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto { name: Some(name.to_string()), ..Default::default() };
    match value {
        Attr::Int(v) => {
            a.r#type = Some(attribute_type::INT);
            a.i = Some(v);
        }
        Attr::Float(v) => {
            a.r#type = Some(attribute_type::FLOAT);
            a.f = Some(v);
        }
        Attr::Str(v) => {
            a.r#type = Some(attribute_type::STRING);
            a.s = Some(v.into_bytes());
        }
        Attr::Ints(v) => {
            a.r#type = Some(attribute_type::INTS);
            a.ints = v;
        }
        Attr::Tensor(t) => {
            a.r#type = Some(attribute_type::TENSOR);
            a.t = Some(t);
        }
        Attr::Graph(g) => {
            a.r#type = Some(attribute_type::GRAPH);
            a.g = Some(Box::new(g));
        }
    }
    a
}

/// A tensor held inline in the protobuf (constants, small subgraph values).
pub fn inline_tensor(name: &str, elem_type: i32, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem_type),
        name: Some(name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Where initializer bytes go: one external data file, written as tensors are made.
pub struct ExternalData<W: Write> {
    out: W,
    location: String,
    offset: u64,
}

/// Tensors at least this large start at a multiple of [`LARGE_ALIGN`] in the data file (so a
/// runtime can map them page-aligned); smaller ones at a multiple of [`SMALL_ALIGN`].
pub const LARGE_THRESHOLD: u64 = 1 << 20;
/// Alignment of large tensors (the mmap allocation granularity on Windows).
pub const LARGE_ALIGN: u64 = 1 << 16;
/// Alignment of small tensors (enough for any element type; dense otherwise, as onnx-ir packs).
pub const SMALL_ALIGN: u64 = 16;

impl<W: Write> ExternalData<W> {
    /// Writes into `out`, referenced from the model as `location` (a file name beside it).
    pub fn new(out: W, location: &str) -> ExternalData<W> {
        ExternalData { out, location: location.to_string(), offset: 0 }
    }

    /// Bytes written so far (padding included).
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Appends `raw` (aligned) and returns the tensor message that points at it.
    pub fn append(
        &mut self,
        name: &str,
        elem_type: i32,
        dims: &[i64],
        raw: &[u8],
    ) -> Result<TensorProto, std::io::Error> {
        let align = if raw.len() as u64 >= LARGE_THRESHOLD { LARGE_ALIGN } else { SMALL_ALIGN };
        let start = self.offset.div_ceil(align) * align;
        let pad = (start - self.offset) as usize;
        if pad > 0 {
            self.out.write_all(&vec![0u8; pad])?;
        }
        self.out.write_all(raw)?;
        self.offset = start + raw.len() as u64;
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v),
        };
        Ok(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(elem_type),
            name: Some(name.to_string()),
            external_data: vec![
                entry("location", self.location.clone()),
                entry("offset", start.to_string()),
                entry("length", raw.len().to_string()),
            ],
            data_location: Some(DATA_LOCATION_EXTERNAL),
            ..Default::default()
        })
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, std::io::Error> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A graph under construction.
pub struct Graph<W: Write> {
    nodes: Vec<NodeProto>,
    node_names: HashSet<String>,
    initializers: Vec<TensorProto>,
    initializer_names: HashSet<String>,
    values: BTreeMap<String, (i32, Vec<Dim>)>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    data: ExternalData<W>,
    file: std::path::PathBuf,
}

impl<W: Write> Graph<W> {
    /// A graph whose initializers stream into `data`; `file` names the data file in errors.
    pub fn new(data: ExternalData<W>, file: std::path::PathBuf) -> Graph<W> {
        Graph {
            nodes: Vec::new(),
            node_names: HashSet::new(),
            initializers: Vec::new(),
            initializer_names: HashSet::new(),
            values: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            data,
            file,
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i32, shape: Vec<Dim>) {
        self.inputs.push(value_info(name, elem_type, &shape));
    }

    /// Declares a graph output.
    pub fn output(&mut self, name: &str, elem_type: i32, shape: Vec<Dim>) {
        self.outputs.push(value_info(name, elem_type, &shape));
    }

    /// Records the type of an intermediate value (written as `value_info`).
    pub fn value(&mut self, name: &str, elem_type: i32, shape: Vec<Dim>) {
        self.values.insert(name.to_string(), (elem_type, shape));
    }

    /// Whether a node of that name exists.
    pub fn has_node(&self, name: &str) -> bool {
        self.node_names.contains(name)
    }

    /// Adds a node unless one of that name exists (shared subgraphs are made once). Inputs named
    /// `/model/constants/<TYPE>/<value>` get their Constant node on first use.
    pub fn node(
        &mut self,
        op_type: &str,
        domain: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> Result<(), Error> {
        if self.node_names.contains(name) {
            return Ok(());
        }
        for input in inputs {
            if input.starts_with("/model/constants/") && !self.node_names.contains(*input) {
                self.constant(input)?;
            }
        }
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(name.to_string()),
            op_type: Some(op_type.to_string()),
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
            doc_string: None,
            domain: if domain.is_empty() { None } else { Some(domain.to_string()) },
        });
        self.node_names.insert(name.to_string());
        Ok(())
    }

    /// A Constant node for `/model/constants/<TYPE>/<value>`, where value is a number or a list
    /// `[a, b]`; its node is named with `constant_nodes` in place of `constants`.
    fn constant(&mut self, name: &str) -> Result<(), Error> {
        let bad = || Error::Internal(format!("malformed constant name {name}"));
        let rest = name.strip_prefix("/model/constants/").ok_or_else(bad)?;
        let (ty, literal) = rest.split_once('/').ok_or_else(bad)?;
        let (list, items): (bool, Vec<&str>) =
            match literal.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                Some(inner) => (true, inner.split(',').map(str::trim).collect()),
                None => (false, vec![literal]),
            };
        let (elem, raw) = match ty {
            "INT64" => {
                let mut raw = Vec::new();
                for i in &items {
                    raw.extend_from_slice(&i.parse::<i64>().map_err(|_| bad())?.to_le_bytes());
                }
                (data_type::INT64, raw)
            }
            "INT32" => {
                let mut raw = Vec::new();
                for i in &items {
                    raw.extend_from_slice(&i.parse::<i32>().map_err(|_| bad())?.to_le_bytes());
                }
                (data_type::INT32, raw)
            }
            "FLOAT" => {
                let mut raw = Vec::new();
                for i in &items {
                    raw.extend_from_slice(&i.parse::<f32>().map_err(|_| bad())?.to_le_bytes());
                }
                (data_type::FLOAT, raw)
            }
            "FLOAT16" => {
                let mut raw = Vec::new();
                for i in &items {
                    let v = half::f16::from_f32(i.parse::<f32>().map_err(|_| bad())?);
                    raw.extend_from_slice(&v.to_le_bytes());
                }
                (data_type::FLOAT16, raw)
            }
            _ => return Err(bad()),
        };
        let dims: Vec<i64> = if list { vec![items.len() as i64] } else { Vec::new() };
        let tensor = inline_tensor(name, elem, &dims, raw);
        let node_name = name.replacen("/model/constants/", "/model/constant_nodes/", 1);
        self.nodes.push(NodeProto {
            output: vec![name.to_string()],
            name: Some(node_name.clone()),
            op_type: Some("Constant".into()),
            attribute: vec![attribute("value", Attr::Tensor(tensor))],
            ..Default::default()
        });
        self.node_names.insert(name.to_string());
        self.node_names.insert(node_name);
        let shape = dims.iter().map(|&d| Dim::Fixed(d)).collect();
        self.value(name, elem, shape);
        Ok(())
    }

    /// Streams an initializer's bytes into the data file. Each name is written once.
    pub fn initializer(
        &mut self,
        name: &str,
        elem_type: i32,
        dims: &[usize],
        raw: &[u8],
    ) -> Result<(), Error> {
        if !self.initializer_names.insert(name.to_string()) {
            return Err(Error::Internal(format!("initializer {name} written twice")));
        }
        let numel: usize = dims.iter().product();
        let size = data_type::size(elem_type).unwrap_or(1);
        if numel * size != raw.len() {
            return Err(Error::Internal(format!(
                "initializer {name}: {} bytes for dims {dims:?} of {}",
                raw.len(),
                data_type::name(elem_type)
            )));
        }
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let t = self.data.append(name, elem_type, &dims, raw).map_err(|source| Error::Io {
            op: "writing",
            path: self.file.clone(),
            source,
        })?;
        self.initializers.push(t);
        Ok(())
    }

    /// The finished graph message and the data writer.
    pub fn finish(self, name: &str) -> Result<(GraphProto, W), Error> {
        let file = self.file.clone();
        let declared: HashSet<&str> = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .filter_map(|v| v.name.as_deref())
            .chain(self.initializer_names.iter().map(String::as_str))
            .collect();
        let value_info = self
            .values
            .iter()
            .filter(|(n, _)| !declared.contains(n.as_str()))
            .map(|(n, (t, s))| value_info(n, *t, s))
            .collect();
        let graph = GraphProto {
            node: self.nodes,
            name: Some(name.to_string()),
            initializer: self.initializers,
            doc_string: None,
            input: self.inputs,
            output: self.outputs,
            value_info,
        };
        let w =
            self.data.finish().map_err(|source| Error::Io { op: "writing", path: file, source })?;
        Ok((graph, w))
    }
}
