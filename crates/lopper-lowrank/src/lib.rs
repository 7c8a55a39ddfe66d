//! lopper-lowrank (see ../shared/DESIGN.md and docs/ARCHITECTURE.md).
