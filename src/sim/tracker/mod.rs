//! An issue tracker shaped like GitHub's REST API, for the `rest` kind:
//! an organisation's repositories (`GET /orgs/{org}/repos`) and each one's
//! issues (`GET /repos/{owner}/{repo}/issues?state=all&since=…`), paged by
//! `page` and `per_page` with a `Link: <…>; rel="next"` header, times in
//! RFC 3339 to the second, `since` keeping the issues updated at or after
//! it. Live traffic edits, opens and deletes issues.

pub mod routes;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

/// The organisation whose repositories are listed.
pub const ORG: &str = "acme";
const REPOS: usize = 3;
const TITLES: &[&str] = &["Crash on start", "Typo in docs", "Slow query", "Add dark mode", "Flaky test", "Support IPv6"];

/// Counters tests compare against.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct TrackerStats {
    pub edits: u64,
    pub opened: u64,
    pub deleted: u64,
}

/// Which issues a list asks for.
#[derive(Debug, Clone, Default)]
pub struct IssueQuery {
    pub since: Option<DateTime<Utc>>,
    /// `open` (the default), `closed` or `all`.
    pub state: Option<String>,
    pub skip: usize,
    pub limit: usize,
}

pub struct Tracker {
    repos: Vec<Value>,
    /// Per repository (by index): issues by number.
    issues: Vec<BTreeMap<u64, Value>>,
    next_id: u64,
    next_number: Vec<u64>,
    rng: StdRng,
    pub stats: TrackerStats,
}

fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Tracker {
    /// `issues` spread over the repositories, created over the last 30 days.
    pub fn seeded(seed: u64, issues: usize) -> Tracker {
        let now = Utc::now();
        let repos = (0..REPOS)
            .map(|i| {
                let name = format!("repo-{}", i + 1);
                json!({"id": 700_000 + i, "name": name, "full_name": format!("{ORG}/{name}"), "owner": {"login": ORG},
                       "private": false, "updated_at": stamp(now)})
            })
            .collect();
        let mut tracker = Tracker {
            repos,
            issues: vec![BTreeMap::new(); REPOS],
            next_id: 1_000_000,
            next_number: vec![1; REPOS],
            rng: StdRng::seed_from_u64(seed ^ 0x155e),
            stats: TrackerStats::default(),
        };
        for n in 0..issues {
            let age = chrono::Duration::seconds(((issues - n) as i64 * 2_592_000) / issues.max(1) as i64);
            tracker.open(n % REPOS, now - age);
        }
        tracker
    }

    fn open(&mut self, repo: usize, at: DateTime<Utc>) {
        let number = self.next_number[repo];
        self.next_number[repo] += 1;
        self.next_id += 1;
        let title = TITLES[self.rng.gen_range(0..TITLES.len())];
        let issue = json!({
            "id": self.next_id, "number": number, "title": title, "state": "open",
            "user": {"login": format!("user{}", self.rng.gen_range(1..50))}, "labels": [], "comments": 0,
            "created_at": stamp(at), "updated_at": stamp(at), "closed_at": null,
            "repository_url": format!("/repos/{ORG}/repo-{}", repo + 1),
        });
        self.issues[repo].insert(number, issue);
    }

    /// One random change: an issue edited (6 in 10), opened (3 in 10) or deleted.
    pub fn random_mutation(&mut self) {
        let repo = self.rng.gen_range(0..REPOS);
        let roll: f64 = self.rng.r#gen();
        let now = Utc::now();
        if roll < 0.3 || self.issues[repo].is_empty() {
            self.open(repo, now);
            self.stats.opened += 1;
            return;
        }
        let numbers: Vec<u64> = self.issues[repo].keys().copied().collect();
        let number = numbers[self.rng.gen_range(0..numbers.len())];
        if roll < 0.9 {
            let comments = self.rng.gen_range(0..20);
            let issue = self.issues[repo].get_mut(&number).expect("picked from the map");
            let closed = issue["state"] == "open";
            issue["state"] = json!(if closed { "closed" } else { "open" });
            issue["closed_at"] = if closed { json!(stamp(now)) } else { Value::Null };
            issue["comments"] = json!(comments);
            issue["updated_at"] = json!(stamp(now));
            self.stats.edits += 1;
        } else {
            self.issues[repo].remove(&number);
            self.stats.deleted += 1;
        }
    }

    /// The organisation's repositories.
    pub fn repos(&self, org: &str) -> Option<Vec<Value>> {
        (org == ORG).then(|| self.repos.clone())
    }

    /// A page of a repository's issues in `state` (`open`, `closed`,
    /// `all`) updated at or after `since`, oldest first: `limit` of them
    /// after `skip`, and whether more follow.
    pub fn issues(&self, owner: &str, repo: &str, query: &IssueQuery) -> Option<(Vec<Value>, bool)> {
        let index = self.repos.iter().position(|r| r["owner"]["login"] == owner && r["name"] == repo)?;
        let since = query.since.map(stamp);
        let mut kept = self.issues[index].values().filter(|i| {
            let fresh = since.as_deref().is_none_or(|s| i["updated_at"].as_str().unwrap_or_default() >= s);
            let state = query.state.as_deref().unwrap_or("open");
            fresh && (state == "all" || i["state"] == state)
        });
        let page: Vec<Value> = kept.by_ref().skip(query.skip).take(query.limit).cloned().collect();
        Some((page, kept.next().is_some()))
    }

    /// Ground truth (`/__sim/tracker`): every repository and issue.
    pub fn truth(&self) -> Value {
        let issues: Vec<&Value> = self.issues.iter().flat_map(|m| m.values()).collect();
        json!({"repo": self.repos, "issue": issues, "stats": self.stats})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_keeps_what_changed_at_or_after_it() {
        let mut tracker = Tracker::seeded(1, 30);
        let all = |since| IssueQuery { since, state: Some("all".into()), skip: 0, limit: 100 };
        let (page, more) = tracker.issues(ORG, "repo-1", &all(None)).unwrap();
        assert_eq!((page.len(), more), (10, false));
        let (first, more) = tracker.issues(ORG, "repo-1", &IssueQuery { limit: 4, ..all(None) }).unwrap();
        assert_eq!((first.len(), more), (4, true));
        let (last, more) = tracker.issues(ORG, "repo-1", &IssueQuery { skip: 8, limit: 4, ..all(None) }).unwrap();
        assert_eq!((last.len(), more), (2, false));
        let before = Utc::now() - chrono::Duration::seconds(1);
        assert!(tracker.issues(ORG, "repo-1", &all(Some(before))).unwrap().0.is_empty());
        for _ in 0..20 {
            tracker.random_mutation();
        }
        let changed: usize =
            ["repo-1", "repo-2", "repo-3"].iter().map(|r| tracker.issues(ORG, r, &all(Some(before))).unwrap().0.len()).sum();
        assert!(changed > 0 && changed <= 20, "{changed}");
        assert!(tracker.issues(ORG, "nope", &all(None)).is_none() && tracker.repos("other").is_none());
    }
}
