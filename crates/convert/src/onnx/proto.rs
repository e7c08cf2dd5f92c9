//! The ONNX protobuf messages phiquant writes and reads, declared by hand for prost from the field
//! numbers of the public `onnx.proto` (onnx/onnx `onnx/onnx.proto`, proto2 syntax, IR version 10).
//!
//! Only the messages and fields a decoder-only model graph needs are declared; decoding skips
//! unknown fields, so files written by other tools still parse. Declaring them here keeps the
//! build free of `protoc`. Scalars are `Option`s as in proto2, and repeated scalars are unpacked
//! unless the `.proto` says `[packed = true]` (only `TensorProto`'s typed data fields).

/// `TensorProto.DataType` values used here.
pub mod data_type {
    /// 32-bit float.
    pub const FLOAT: i32 = 1;
    /// Unsigned byte (MatMulNBits weights and zero points).
    pub const UINT8: i32 = 2;
    /// 32-bit signed integer.
    pub const INT32: i32 = 6;
    /// 64-bit signed integer.
    pub const INT64: i32 = 7;
    /// Boolean.
    pub const BOOL: i32 = 9;
    /// IEEE half precision.
    pub const FLOAT16: i32 = 10;
    /// bfloat16.
    pub const BFLOAT16: i32 = 16;

    /// Bytes per element of a fixed-size type, `None` for others.
    pub fn size(dt: i32) -> Option<usize> {
        match dt {
            FLOAT | INT32 => Some(4),
            UINT8 | BOOL => Some(1),
            INT64 => Some(8),
            FLOAT16 | BFLOAT16 => Some(2),
            _ => None,
        }
    }

    /// The name ONNX gives a type (`TensorProto.DataType`), for messages.
    pub fn name(dt: i32) -> &'static str {
        match dt {
            FLOAT => "FLOAT",
            UINT8 => "UINT8",
            INT32 => "INT32",
            INT64 => "INT64",
            BOOL => "BOOL",
            FLOAT16 => "FLOAT16",
            BFLOAT16 => "BFLOAT16",
            _ => "other",
        }
    }
}

/// `AttributeProto.AttributeType` values used here.
pub mod attribute_type {
    /// A float.
    pub const FLOAT: i32 = 1;
    /// An int64.
    pub const INT: i32 = 2;
    /// A byte string.
    pub const STRING: i32 = 3;
    /// A tensor.
    pub const TENSOR: i32 = 4;
    /// A graph (If branches).
    pub const GRAPH: i32 = 5;
    /// Floats.
    pub const FLOATS: i32 = 6;
    /// Int64s.
    pub const INTS: i32 = 7;
}

/// `TensorProto.DataLocation.EXTERNAL`.
pub const DATA_LOCATION_EXTERNAL: i32 = 1;

/// `ModelProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// `ir_version` (1).
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    /// `opset_import` (8).
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// `producer_name` (2).
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    /// `producer_version` (3).
    #[prost(string, optional, tag = "3")]
    pub producer_version: Option<String>,
    /// `domain` (4).
    #[prost(string, optional, tag = "4")]
    pub domain: Option<String>,
    /// `model_version` (5).
    #[prost(int64, optional, tag = "5")]
    pub model_version: Option<i64>,
    /// `doc_string` (6).
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// `graph` (7).
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// `metadata_props` (14).
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct OperatorSetIdProto {
    /// `domain` (1); empty is the default `ai.onnx` domain.
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// `version` (2).
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StringStringEntryProto {
    /// `key` (1).
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// `value` (2).
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// `node` (1), in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// `name` (2).
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// `initializer` (5).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// `doc_string` (10).
    #[prost(string, optional, tag = "10")]
    pub doc_string: Option<String>,
    /// `input` (11).
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// `output` (12).
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// `value_info` (13).
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// `input` (1).
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// `output` (2).
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// `name` (3).
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// `op_type` (4).
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    /// `attribute` (5).
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// `doc_string` (6).
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// `domain` (7).
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
}

/// `AttributeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// `name` (1).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `f` (2).
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// `i` (3).
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// `s` (4).
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// `t` (5).
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// `g` (6).
    #[prost(message, optional, boxed, tag = "6")]
    pub g: Option<Box<GraphProto>>,
    /// `floats` (7).
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// `ints` (8).
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// `doc_string` (13).
    #[prost(string, optional, tag = "13")]
    pub doc_string: Option<String>,
    /// `type` (20), an [`attribute_type`].
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
}

/// `TensorProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `dims` (1).
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// `data_type` (2), a [`data_type`].
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    /// `float_data` (4).
    #[prost(float, repeated, packed = "true", tag = "4")]
    pub float_data: Vec<f32>,
    /// `int32_data` (5).
    #[prost(int32, repeated, packed = "true", tag = "5")]
    pub int32_data: Vec<i32>,
    /// `int64_data` (7).
    #[prost(int64, repeated, packed = "true", tag = "7")]
    pub int64_data: Vec<i64>,
    /// `name` (8).
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    /// `raw_data` (9).
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// `doc_string` (12).
    #[prost(string, optional, tag = "12")]
    pub doc_string: Option<String>,
    /// `external_data` (13): `location`, `offset`, `length`.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// `data_location` (14).
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// `name` (1).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `type` (2).
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// `doc_string` (3).
    #[prost(string, optional, tag = "3")]
    pub doc_string: Option<String>,
}

/// `TypeProto` (tensor types only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// `tensor_type` (1) of the `value` oneof.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
    /// `denotation` (6).
    #[prost(string, optional, tag = "6")]
    pub denotation: Option<String>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProtoTensor {
    /// `elem_type` (1), a [`data_type`].
    #[prost(int32, optional, tag = "1")]
    pub elem_type: Option<i32>,
    /// `shape` (2).
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// `dim` (1).
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a fixed size or a symbolic name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    /// `dim_value` (1) of the `value` oneof.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// `dim_param` (2) of the `value` oneof.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
    /// `denotation` (3).
    #[prost(string, optional, tag = "3")]
    pub denotation: Option<String>,
}
