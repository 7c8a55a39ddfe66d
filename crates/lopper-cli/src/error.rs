/// Errors of the `lopper` command line; each says what and where.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Tensor(#[from] lopper_tensor::Error),
    #[error(transparent)]
    Sparse(#[from] lopper_sparse::Error),
    #[error(transparent)]
    Prune(#[from] lopper_prune::Error),
    #[error(transparent)]
    Lowrank(#[from] lopper_lowrank::Error),
    #[error(transparent)]
    Train(#[from] lopper_train::Error),
    #[error(transparent)]
    Energy(#[from] lopper_energy::Error),
    #[error("{0}")]
    Usage(String),
    /// A report (table, JSON, CSV, SVG) that could not be rendered.
    #[error("report: {0}")]
    Report(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
