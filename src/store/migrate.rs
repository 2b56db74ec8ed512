//! Versioned schema migrations: numbered SQL files per backend
//! (`migrations/sqlite/NNNN_name.sql`, `migrations/postgres/NNNN_name.sql`),
//! compiled into the binary and applied in order, each once, recorded in
//! `tributary_schema_version`. Both backends apply them in one transaction
//! with the version rows; on Postgres under an advisory lock, so processes
//! starting together migrate once. Migration 0001 is the schema of release
//! 0.1.0 (all `IF NOT EXISTS`), so a database that release made upgrades in
//! place.
//!
//! A new migration is a new file and a new line in the list below (a test
//! checks the two agree); a released file is never edited (a test pins
//! their checksums: databases out there have run them as they were).

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    /// Its file's name without `.sql`: `0001_initial`.
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($version:literal => $name:literal),* $(,)?) => {
        &[$(Migration { version: $version, name: $name, sql: include_str!(concat!("../../migrations/", $dir, "/", $name, ".sql")) }),*]
    };
}

pub const SQLITE: &[Migration] =
    migrations!("sqlite": 1 => "0001_initial", 2 => "0002_checkpoint_positions", 3 => "0003_parked_events", 4 => "0004_controls");
pub const POSTGRES: &[Migration] =
    migrations!("postgres": 1 => "0001_initial", 2 => "0002_checkpoint_positions", 3 => "0003_parked_events", 4 => "0004_controls");

/// The version table, the same on both backends.
pub const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS tributary_schema_version (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

/// The migrations of `all` not yet in `applied`, in order.
pub fn pending<'a>(all: &'a [Migration], applied: &[i64]) -> impl Iterator<Item = &'a Migration> {
    all.iter().filter(move |m| !applied.contains(&m.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `migrations/{dir}` is in the list, in order, and no
    /// version is used twice.
    fn files_match(dir: &str, list: &[Migration]) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
        let mut files: Vec<String> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        let listed: Vec<String> = list.iter().map(|m| format!("{}.sql", m.name)).collect();
        assert_eq!(files, listed, "migrations/{dir} and the list in store/migrate.rs disagree");
        for m in list {
            assert!(m.name.starts_with(&format!("{:04}_", m.version)), "{} is not numbered {}", m.name, m.version);
        }
        assert!(list.windows(2).all(|w| w[0].version < w[1].version), "versions out of order");
    }

    #[test]
    fn every_migration_file_is_listed_in_order() {
        files_match("sqlite", SQLITE);
        files_match("postgres", POSTGRES);
    }

    /// SHA-256 of every released migration. Editing one would leave the
    /// databases that ran it with another schema than new ones get: add a
    /// migration instead.
    const RELEASED: &[(&str, &str, &str)] = &[
        ("sqlite", "0001_initial", "2fc2d47e029406967e7049c92c4c4c87121f7de852dc40e8283eed039ac955c1"),
        ("sqlite", "0002_checkpoint_positions", "d9d8dd597715ce7d3c58ed622631cb5a926fb441c91eb81d1c3d48820a028c7e"),
        ("postgres", "0001_initial", "d1914b6022c4856ff3c86d010c0472e870f5eae1e2e3999fa733bd7b9a659f51"),
        ("postgres", "0002_checkpoint_positions", "83db2d0a8d03828730d2420bc77d0fb504ef3feab9c17d904f5a8d204d5d66f1"),
        ("sqlite", "0003_parked_events", "fa0c4b79c89172e3bba9835377eefae5276cc36a365056d0a1330577f8366fbe"),
        ("postgres", "0003_parked_events", "fa0c4b79c89172e3bba9835377eefae5276cc36a365056d0a1330577f8366fbe"),
    ];

    #[test]
    fn released_migrations_are_never_edited() {
        for (backend, name, sum) in RELEASED {
            let list = if *backend == "sqlite" { SQLITE } else { POSTGRES };
            let migration = list.iter().find(|m| m.name == *name).unwrap_or_else(|| panic!("{backend} {name} was removed"));
            // token_hash is SHA-256 in hex
            assert_eq!(crate::ids::sha256_hex(migration.sql), *sum, "migrations/{backend}/{name}.sql was edited after its release");
        }
    }

    #[test]
    fn pending_skips_what_was_applied() {
        let all = [Migration { version: 1, name: "a", sql: "" }, Migration { version: 2, name: "b", sql: "" }];
        assert_eq!(pending(&all, &[1]).map(|m| m.version).collect::<Vec<_>>(), [2]);
        assert_eq!(pending(&all, &[1, 2]).count(), 0);
    }
}
