//! One module per subcommand. Each `run` returns the process exit code: 0 when everything held,
//! 1 when the command found problems in its input (rejected events, integrity failures); errors
//! that stop the command (unreadable file, bad flag) become exit code 2 in `main`.

pub mod bench;
pub mod event;
pub mod output;
pub mod progress;
pub mod reindex;
pub mod search;
pub mod send;
pub mod serve;
pub mod tail;
pub mod verify;
pub mod witness;
