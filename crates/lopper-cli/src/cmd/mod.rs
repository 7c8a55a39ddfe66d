pub mod bench;
pub mod compress;
