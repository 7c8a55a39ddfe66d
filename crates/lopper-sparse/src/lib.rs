//! lopper-sparse (see ../shared/DESIGN.md and docs/ARCHITECTURE.md).
