//! The errors of `mp-mpi`.

/// What can go wrong with MPI itself (a pool's tasks report [`mp_pool::Error`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An MPI call returned an error: the call and the library's message.
    Mpi {
        /// The MPI function.
        call: &'static str,
        /// The library's message for the error code.
        message: String,
    },
    /// `MPI_Comm_spawn` started fewer workers than asked (none are kept).
    Spawn {
        /// How many started.
        started: usize,
        /// How many were asked for.
        wanted: usize,
        /// The library's message for the first failure.
        message: String,
    },
    /// The library cannot give `MPI_THREAD_MULTIPLE`, which a pool's thread needs.
    ThreadLevel {
        /// The level it provides (`MPI_THREAD_*`).
        provided: i32,
    },
    /// MPI was initialized already in this process (by [`init`](crate::init) or by other
    /// code), or finalized.
    AlreadyInitialized,
    /// A worker runs another executable than this process (its fingerprint differs): tasks
    /// cannot cross to it.
    WrongExecutable {
        /// The worker's rank.
        rank: usize,
    },
    /// The ranks of the world serve one pool at a time, and one is open.
    WorldBusy,
    /// There are no other ranks in the world to serve a pool (run under `mpirun -n N`, N ≥ 2,
    /// or use [`Mpi::spawn`](crate::Mpi::spawn)).
    NoWorld,
    /// An invalid argument.
    InvalidArgument(&'static str),
    /// A message larger than MPI can carry in one call (2 GiB).
    TooLarge(usize),
    /// Building the pool failed.
    Pool(mp_pool::Error),
}

/// The result type of `mp-mpi`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Mpi { call, message } => write!(f, "{call} failed: {message}"),
            Error::Spawn { started, wanted, message } => {
                write!(f, "MPI_Comm_spawn started {started} of {wanted} workers: {message}")
            }
            Error::ThreadLevel { provided } => write!(
                f,
                "the MPI library provides thread level {provided}, and an mp-mpi pool needs \
                 MPI_THREAD_MULTIPLE"
            ),
            Error::AlreadyInitialized => {
                f.write_str("MPI was already initialized (or finalized) in this process")
            }
            Error::WrongExecutable { rank } => write!(
                f,
                "worker rank {rank} runs another executable than this process: tasks cannot \
                 cross to it"
            ),
            Error::WorldBusy => f.write_str("the world's ranks already serve a pool"),
            Error::NoWorld => f.write_str(
                "this MPI world has no other rank to serve a pool (run under `mpirun -n N` \
                 with N >= 2, or spawn workers)",
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::TooLarge(n) => write!(f, "a message of {n} bytes is too large for MPI"),
            Error::Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<mp_pool::Error> for Error {
    fn from(e: mp_pool::Error) -> Self {
        Error::Pool(e)
    }
}
