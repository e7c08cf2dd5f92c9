//! Integration tests of the quantization kernels: golden vectors from the reference
//! implementations, thread-count determinism, and error bounds.

mod determinism;
mod golden;
mod properties;
mod util;
