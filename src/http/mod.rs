//! The main HTTP port: bundled client pages and status.
