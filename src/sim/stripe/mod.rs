//! Stripe's API as the simulator serves it.
//!
//! - `fixtures`: Stripe's example objects, and which resources are served
//! - `seed`: new objects shaped exactly like the examples
//! - `list`: lists, cursors and filters
//! - `expand`: `expand[]` of references and of lists shown only when asked
//! - `world`: the ground truth and Stripe's semantics over it
//! - `routes`: the `/v1` routes

pub mod expand;
pub mod fixtures;
pub mod list;
pub mod routes;
pub mod seed;
pub mod world;

pub use world::World;
