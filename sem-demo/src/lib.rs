//! sem-demo: work in progress.
