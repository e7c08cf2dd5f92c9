//! Metadata values and tensor types.

use phiquant_quant::BlockFormat;

/// A metadata value. Arrays hold values of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `GGUF_TYPE_UINT8` (0).
    U8(u8),
    /// `GGUF_TYPE_INT8` (1).
    I8(i8),
    /// `GGUF_TYPE_UINT16` (2).
    U16(u16),
    /// `GGUF_TYPE_INT16` (3).
    I16(i16),
    /// `GGUF_TYPE_UINT32` (4).
    U32(u32),
    /// `GGUF_TYPE_INT32` (5).
    I32(i32),
    /// `GGUF_TYPE_FLOAT32` (6).
    F32(f32),
    /// `GGUF_TYPE_BOOL` (7).
    Bool(bool),
    /// `GGUF_TYPE_STRING` (8).
    String(String),
    /// `GGUF_TYPE_ARRAY` (9): the element type and the elements.
    Array(u32, Vec<GgufValue>),
    /// `GGUF_TYPE_UINT64` (10).
    U64(u64),
    /// `GGUF_TYPE_INT64` (11).
    I64(i64),
    /// `GGUF_TYPE_FLOAT64` (12).
    F64(f64),
}

impl GgufValue {
    /// The type number written before the value.
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(..) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// The name gguf-py gives the type (`UINT32`, `STRING`, ...).
    pub fn type_name(id: u32) -> &'static str {
        match id {
            0 => "UINT8",
            1 => "INT8",
            2 => "UINT16",
            3 => "INT16",
            4 => "UINT32",
            5 => "INT32",
            6 => "FLOAT32",
            7 => "BOOL",
            8 => "STRING",
            9 => "ARRAY",
            10 => "UINT64",
            11 => "INT64",
            12 => "FLOAT64",
            _ => "UNKNOWN",
        }
    }

    /// An array of strings.
    pub fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> GgufValue {
        GgufValue::Array(8, items.into_iter().map(|s| GgufValue::String(s.into())).collect())
    }

    /// The value as an unsigned integer, for any integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, for float types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The string, for strings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A ggml tensor type phiquant reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub BlockFormat);

impl GgmlType {
    /// The `ggml_type` number.
    pub fn id(self) -> u32 {
        match self.0 {
            BlockFormat::F32 => 0,
            BlockFormat::F16 => 1,
            BlockFormat::Q4_0 => 2,
            BlockFormat::Q4_1 => 3,
            BlockFormat::Q5_0 => 6,
            BlockFormat::Q8_0 => 8,
            BlockFormat::Q4K => 12,
            BlockFormat::Q6K => 14,
            BlockFormat::Bf16 => 30,
            _ => unreachable!("every BlockFormat has a ggml type"),
        }
    }

    /// llama.cpp's name for a `ggml_type` number (`ggml/include/ggml.h`), supported or not.
    pub fn name_of(id: u32) -> &'static str {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        NAMES.get(id as usize).copied().unwrap_or("unknown")
    }

    /// The type for a `ggml_type` number, when phiquant supports it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        let f = match id {
            0 => BlockFormat::F32,
            1 => BlockFormat::F16,
            2 => BlockFormat::Q4_0,
            3 => BlockFormat::Q4_1,
            6 => BlockFormat::Q5_0,
            8 => BlockFormat::Q8_0,
            12 => BlockFormat::Q4K,
            14 => BlockFormat::Q6K,
            30 => BlockFormat::Bf16,
            _ => return None,
        };
        Some(GgmlType(f))
    }
}
