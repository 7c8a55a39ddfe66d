pub mod bench;
pub mod compare;
pub mod compress;
pub mod demo;
pub mod inspect;
pub mod prune;
pub mod report;
pub mod train;
