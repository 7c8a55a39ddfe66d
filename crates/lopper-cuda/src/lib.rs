//! lopper-cuda (see ../shared/DESIGN.md and docs/ARCHITECTURE.md).
