//! The control plane: accounts, stream keys, ledger, packages, gifts,
//! rewards and settlement (DESIGN.md §6).
//!
//! The media path sees the control plane only through [`hooks::MediaHooks`]:
//! the origin and edges ask it whether a publish or a play is allowed and
//! report usage to it. Everything else here is reached over the REST API.

pub mod hooks;
