pub mod bench;
pub mod compress;
pub mod inspect;
pub mod prune;
