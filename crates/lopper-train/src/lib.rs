//! lopper-train (see ../shared/DESIGN.md and docs/ARCHITECTURE.md).
