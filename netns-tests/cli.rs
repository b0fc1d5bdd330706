//! CLI tests (see cli.rs)
