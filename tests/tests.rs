//! phiquant's integration tests: the CLI end to end, on the fixtures and the `../shared` models.

#[macro_use]
mod macros;
mod util;

mod hub_server;
