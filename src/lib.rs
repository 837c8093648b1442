//! Carrier package for the workspace-level examples and tests.
