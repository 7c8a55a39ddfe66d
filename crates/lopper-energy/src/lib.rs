//! lopper-energy (see ../shared/DESIGN.md and docs/ARCHITECTURE.md).
