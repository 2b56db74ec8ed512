//! Tributary mirrors third-party APIs into your database and delivers every
//! change. The modules follow the data flow:
//!
//! - [`sim`]: a Stripe-compatible upstream, a shifts window API and a
//!   marketplace event queue (seeded data, live traffic, faults)
//! - [`source`]: pulls data in — [`source::stripe`] backfills and tails
//!   `/v1/events`, [`source::window`] polls date windows for what changed,
//!   [`source::event_queue`] pulls and acknowledges an upstream queue
//! - [`store`]: mirror tables and the change log, committed with checkpoints
//! - [`delivery`]: reads the change log per sink, in commit order, at least once
//! - [`sink`]: where changes go — webhooks, Redis Streams, NATS JetStream, Kafka
//! - [`queue`]: built-in pull queues — apps, tokens, the fan-out
//! - [`retention`]: purges delivered changes and old queue events
//! - [`write`]: idempotent writes through to the upstream (atomic phases,
//!   completer, reaper)
//! - [`api`]: health, metrics, source and sink status, the `/wait` barrier,
//!   apps and queues, writes, and the Stripe-compatible path
//! - [`console`]: the pages at `/`, the live overview and its history
//! - [`control`]: operators' requests (pause, resume, rewind, redrive,
//!   discard), stored and applied by whichever process runs the target
//! - [`engine`]: wires config, store, sources and API together
//! - [`config`]: `tributary.toml`, validated before anything starts
//! - [`cli`]: the `tributary` command
//! - [`telemetry`]: logs (JSON off a terminal), Prometheus metrics, the StatsD push
//! - [`stripe_api`]: the Stripe API surface the sim and the source share
//! - [`retry`]: the backoff every outbound call shares
//! - [`ids`]: random ids, SHA-256 hex and the short-text rule every room shares

// an unwrap in the engine is a panic waiting for input; tests may use them
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod delivery;
pub mod engine;
pub mod ids;
pub mod queue;
pub mod retention;
pub mod retry;
pub mod sim;
pub mod sink;
pub mod source;
pub mod store;
pub mod stripe_api;
pub mod telemetry;
pub mod write;
