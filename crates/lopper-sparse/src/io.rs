//! Sparse matrix files: DLMC `.smtx` (pattern only) and Matrix Market `.mtx` coordinate files.
//! Readers return typed errors naming the file, the line and the problem; writers are atomic.
pub mod mtx;
pub mod smtx;
