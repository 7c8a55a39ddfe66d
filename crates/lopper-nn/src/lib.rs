//! lopper-nn (see ../shared/DESIGN.md and docs/ARCHITECTURE.md).
