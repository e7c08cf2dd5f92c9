//! Verification of phiquant artefacts.
//!
//! This crate will own the proof that an artefact is good: it runs the artefact in the runtime
//! that consumes it (ONNX Runtime or llama.cpp, on the target device), runs the full-precision
//! model in phiquant's native engine on the same token ids, and computes the statistics of
//! llama.cpp's `perplexity --kl-divergence` report (perplexity ratio, KL divergence percentiles,
//! same-top-token rate), greedy-generation agreement, reports (terminal, JSON, Markdown, HTML) and
//! the gates a build pipeline fails on.
//!
//! # Brief overview
//! Nothing is implemented yet: the crate exists so that the workspace has its final shape and its
//! one-way dependencies (`verify` depends on `runtime`). The verification issue fills it in.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
