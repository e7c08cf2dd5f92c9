pub mod clip;
pub mod quantize;
