//! socket-demo: work in progress.
