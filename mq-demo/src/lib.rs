//! mq-demo: work in progress.
