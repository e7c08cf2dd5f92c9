pub mod quantize;
