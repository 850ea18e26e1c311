//! The SQLite driver (being written).
