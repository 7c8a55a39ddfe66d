//! File formats: safetensors and `.npy`, and the atomic write they share.
mod atomic;
pub mod npy;
pub mod safetensors;
mod st_header;

pub use atomic::{check_output, write_atomic};
