//! The Redis sink: `XADD` to Redis Streams.

mod config;
mod sink;

pub use config::RedisConfig;
pub use sink::RedisStreams;
