//! lopper-prune (see ../shared/DESIGN.md and docs/ARCHITECTURE.md).
