//! Ownership on SQLite: one process has the file, so it owns every source.

use crate::store::Lease;

/// A single process owns everything on SQLite: ownership is never lost.
pub(super) struct Sole;

#[async_trait::async_trait]
impl Lease for Sole {
    async fn lost(&mut self) -> String {
        std::future::pending().await
    }
}
