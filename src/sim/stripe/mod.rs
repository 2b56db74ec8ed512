//! Stripe's API as the simulator serves it.
//!
//! - `fixtures`: Stripe's example objects, and which resources are served
//! - `seed`: new objects shaped exactly like the examples
//! - `list`: lists, cursors and filters
//! - `world`: the ground truth and Stripe's semantics over it
//! - `routes`: the `/v1` routes

pub mod fixtures;
pub mod list;
pub mod routes;
pub mod seed;
pub mod world;

pub use world::World;
