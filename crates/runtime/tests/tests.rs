//! Integration tests of the runtime: the native engine against transformers' outputs.

mod engine_golden;
mod layers;
mod util;
