//! Commits heard in this process: one writer, so a watch counter bumped
//! after each commit that wrote changes wakes every reader (delivery, the
//! queue fan-out) without polling.

use tokio::sync::watch;

use crate::store::Applied;

/// Bump `commits` if any of `results` wrote changes.
pub(super) fn committed(commits: &watch::Sender<u64>, results: &[Applied]) {
    if results.iter().any(|a| a.changes > 0) {
        commits.send_modify(|n| *n += 1);
    }
}
