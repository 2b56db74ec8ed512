//! The command line as users meet it: `--help`, `check`, and `run` failing
//! fast with a one-line reason; and the official Stripe client library
//! working against `tributary sim`.

mod common;

use common::*;

const CONFIG: &str = "[database]\nurl = \"sqlite://DB\"\n[[sources]]\nname = \"stripe\"\nkind = \"stripe\"\nbase_url = \"http://127.0.0.1:1\"\napi_key_env = \"TRIBUTARY_CLI_TEST_KEY\"\n";

fn config_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("c.toml");
    std::fs::write(&path, text.replace("DB", &dir.join("t.db").display().to_string())).unwrap();
    path.display().to_string()
}

#[test]
fn every_command_has_help() {
    for command in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["sim", "--help"],
        vec!["demo", "--help"],
        vec!["check", "--help"],
        vec!["status", "--help"],
        vec!["apps", "--help"],
        vec!["apps", "create", "--help"],
        vec!["queue", "pull", "--help"],
        vec!["parked", "--help"],
        vec!["verify", "--help"],
    ] {
        let (code, stdout, _) = tributary(&command, &[]);
        assert_eq!(code, 0, "{command:?}");
        assert!(stdout.contains("Usage:"), "{command:?}: {stdout}");
    }
}

#[test]
fn check_accepts_a_good_config_and_names_what_is_wrong_otherwise() {
    let dir = tempdir();
    let good = config_file(dir.path(), CONFIG);
    let (code, stdout, stderr) = tributary(&["check", "--config", &good], &[("TRIBUTARY_CLI_TEST_KEY", "sk_test_x")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("config ok"));

    let cases = [
        (CONFIG.to_string(), vec![], "TRIBUTARY_CLI_TEST_KEY"),
        (CONFIG.replace("name = \"stripe\"", "name = \"stripe\"\nrate_limit = 5"), vec![("TRIBUTARY_CLI_TEST_KEY", "k")], "rate_limit"),
        (CONFIG.replace("kind = \"stripe\"", "kind = \"paypal\""), vec![("TRIBUTARY_CLI_TEST_KEY", "k")], "paypal"),
        (CONFIG.replace("[[sources]]", "[[sources]\n"), vec![], "c.toml:"),
        (
            CONFIG.replace("name = \"stripe\"", "name = \"stripe\"\napi_version = \"latest\""),
            vec![("TRIBUTARY_CLI_TEST_KEY", "k")],
            "api_version 'latest'",
        ),
    ];
    for (text, env, expected) in cases {
        let path = config_file(dir.path(), &text);
        let (code, _, stderr) = tributary(&["check", "--config", &path], &env);
        assert_eq!(code, 1, "{text}");
        assert!(stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1, "not one line: {stderr}");
        assert!(stderr.contains(expected), "{expected} not in: {stderr}");
    }
    // any field from the environment: TRIBUTARY_ then its path joined by __
    let good = config_file(dir.path(), CONFIG);
    let key = ("TRIBUTARY_CLI_TEST_KEY", "k");
    let (code, _, stderr) =
        tributary(&["check", "--config", &good], &[key, ("TRIBUTARY_DATABASE__URL", "sqlite:///nonexistent-dir/deeper/t.db")]);
    assert_eq!(code, 1, "the override was not applied");
    assert!(stderr.contains("/nonexistent-dir/deeper/t.db"), "{stderr}");
    let (code, _, stderr) = tributary(&["check", "--config", &good], &[key, ("TRIBUTARY_SOURCES__STRIPE__RATE_LIMT_PER_SEC", "5")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("TRIBUTARY_SOURCES__STRIPE__RATE_LIMT_PER_SEC") && stderr.contains("rate_limt_per_sec"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let (code, stdout, stderr) = tributary(&["check", "--config", &good], &[key, ("TRIBUTARY_SOURCES__STRIPE__CONCURRENCY", "4")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("config ok"));
    let (code, _, stderr) = tributary(&["check", "--config", "/nonexistent/tributary.toml"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/tributary.toml"));
}

#[test]
fn a_config_may_come_from_the_environment_alone() {
    let dir = tempdir();
    let db = format!("sqlite://{}", dir.path().join("env.db").display());
    let env = [
        ("TRIBUTARY_DATABASE__URL", db.as_str()),
        ("TRIBUTARY_SOURCES__0__NAME", "shifts"),
        ("TRIBUTARY_SOURCES__0__KIND", "window"),
        ("TRIBUTARY_SOURCES__0__BASE_URL", "http://127.0.0.1:9"),
        ("TRIBUTARY_SOURCES__0__API_KEY_ENV", "TRIBUTARY_CLI_TEST_KEY"),
        ("TRIBUTARY_CLI_TEST_KEY", "token"),
    ];
    let (code, stdout, stderr) = tributary(&["check"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 source(s)"), "{stdout}");
    let (code, _, stderr) = tributary(&["check"], &env[..5]);
    assert_eq!(code, 1);
    assert!(stderr.contains("TRIBUTARY_CLI_TEST_KEY") && stderr.contains("sources.shifts.api_key_env"), "{stderr}");
    let (code, _, stderr) = tributary(&["check"], &[("TRIBUTARY_SOURCES__0__KIND", "window")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("(environment) with TRIBUTARY_SOURCES__0__KIND"), "{stderr}");
}

#[test]
fn run_fails_at_once_with_one_line_on_an_unusable_database() {
    let dir = tempdir();
    let text = CONFIG.replace("sqlite://DB\"", "sqlite:///nonexistent-dir/deeper/t.db\"\n[api]\nlisten = \"127.0.0.1:0\"");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = tributary(&["run", "--config", &path.display().to_string()], &[("TRIBUTARY_CLI_TEST_KEY", "k")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent-dir/deeper/t.db") && stderr.trim_end().lines().count() == 1, "{stderr}");
}

#[test]
fn a_wrong_postgres_url_fails_check_and_run_with_one_line() {
    let dir = tempdir();
    let base = tributary::store::testing::base_url();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let refused = "postgres://postgres:secret-pw@127.0.0.1:1/postgres".to_string();
    for (url, expected) in [(format!("{prefix}/tributary_no_such_db"), "tributary_no_such_db"), (refused, "127.0.0.1:1")] {
        let text = CONFIG.replace("sqlite://DB\"", &format!("{url}\"\n[api]\nlisten = \"127.0.0.1:0\""));
        let path = dir.path().join("pg.toml");
        std::fs::write(&path, text).unwrap();
        for command in ["check", "run"] {
            let started = std::time::Instant::now();
            let (code, _, stderr) = tributary(&[command, "--config", &path.display().to_string()], &[("TRIBUTARY_CLI_TEST_KEY", "k")]);
            assert_eq!(code, 1, "{command} {url}: {stderr}");
            assert!(stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1, "{command}: {stderr}");
            assert!(stderr.contains(expected), "{command}: {stderr}");
            assert!(!stderr.contains("secret-pw"), "the password leaked: {stderr}");
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "{command} did not fail at once");
        }
    }
}

/// What `run` would refuse or loop on, `check` reports first: both exit 1
/// with one line, for the same reason.
#[test]
fn check_and_run_refuse_what_run_could_not_run() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("a-directory")).unwrap();
    let with_api = |text: String| text.replace("[[sources]]", "[api]\nlisten = \"127.0.0.1:0\"\n[[sources]]");
    let webhook = |url: &str| {
        format!("{CONFIG}[[sinks]]\nname = \"hooks\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_env = \"TRIBUTARY_CLI_TEST_SECRET\"\n")
    };
    let good_secret = ("TRIBUTARY_CLI_TEST_SECRET", WEBHOOK_SECRET);
    let cases = [
        (webhook("htp:/nope"), good_secret, "'htp:/nope' is not an http(s) URL"),
        (webhook("http://127.0.0.1:9/hooks"), ("TRIBUTARY_CLI_TEST_SECRET", "not base64!"), "not whsec_ + base64"),
        (CONFIG.replace("sqlite://DB", "sqlite://"), good_secret, "needs a file path"),
        (CONFIG.replace("DB", &dir.path().join("a-directory").display().to_string()), good_secret, "is a directory"),
        (CONFIG.replace("sqlite://DB", "sqlite:///sys/tributary-check.db"), good_secret, "/sys"),
    ];
    for (text, secret, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, with_api(text.replace("DB", &dir.path().join("t.db").display().to_string()))).unwrap();
        for command in ["check", "run"] {
            let (code, _, stderr) =
                tributary(&[command, "--config", &path.display().to_string()], &[("TRIBUTARY_CLI_TEST_KEY", "k"), secret]);
            assert_eq!(code, 1, "{command} accepted a config it cannot run ({expected}): {stderr}");
            assert!(stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1, "{command}: {stderr}");
            assert!(stderr.contains(expected), "{command}: {expected} not in {stderr}");
        }
    }
}

#[test]
fn a_fatal_error_says_its_cause_once() {
    let dir = tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = CONFIG.replace("[[sources]]", &format!("[api]\nlisten = \"{}\"\n[[sources]]", taken.local_addr().unwrap()));
    let path = config_file(dir.path(), &text);
    let (code, _, stderr) = tributary(&["run", "--config", &path], &[("TRIBUTARY_CLI_TEST_KEY", "k")]);
    assert_eq!(code, 1);
    assert_eq!(stderr.matches("Address already in use").count(), 1, "{stderr}");
}

/// `check` of the config at `path` exits 1 with one line holding
/// `expected`; returns that line.
fn assert_check_refuses(path: &str, env: &[(&str, &str)], line: &str, expected: &str) -> String {
    let (code, _, stderr) = tributary(&["check", "--config", path], env);
    assert_eq!(code, 1, "accepted: {line}");
    assert!(stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1, "{line}: not one line: {stderr}");
    assert!(stderr.contains(expected), "{line}: '{expected}' not in: {stderr}");
    stderr
}

/// Every field of the declarative HTTP layer refuses a wrong value at
/// `check`: exit 1, one line that names the field.
#[test]
fn check_names_the_declarative_field_that_is_wrong() {
    let dir = tempdir();
    let base = "[database]\nurl = \"sqlite://DB\"\n[[sources]]\nname = \"wiw\"\npreset = \"wheniwork\"\n";
    let secrets = [("WHENIWORK_API_KEY", "k"), ("WHENIWORK_EMAIL", "e@example.com"), ("WHENIWORK_PASSWORD", "p")];
    let good = config_file(dir.path(), base);
    let (code, stdout, stderr) = tributary(&["check", "--config", &good], &secrets);
    assert_eq!(code, 0, "the preset alone is a good config: {stderr}");
    assert!(stdout.contains("config ok"), "{stdout}");
    let (code, _, stderr) = tributary(&["check", "--config", &good], &secrets[..2]);
    assert_eq!(code, 1);
    assert!(stderr.contains("WHENIWORK_PASSWORD") && stderr.contains("sources.wiw.auth.body_env.password"), "{stderr}");

    let cases = [
        ("time_format = \"iso\"", "unknown time format 'iso'"),
        ("time_format = \"%Y-%Q\"", "not a valid strftime pattern"),
        ("param_format = \"yesterday\"", "unknown time format 'yesterday'"),
        ("items_path = \"data items\"", "'data items' is not a path"),
        ("id_path = \"a..b\"", "'a..b' is not a path"),
        ("time_path = \"\"", "'' is not a path"),
        ("deleted_ids_path = \"x/y\"", "'x/y' is not a path"),
        ("sideloads = { user = \"users[0]\" }", "'users[0]' is not a path"),
        ("sideloads = { \"bad object\" = \"users\" }", "object 'bad object'"),
        ("preset = \"whenwork\"", "unknown preset 'whenwork'"),
        ("kind = \"stripe\"", "is for kind = \"window\""),
        ("auth = { kind = \"bearer\" }", "token_env"),
        ("auth = { kind = \"header\", token_env = \"T\" }", "name"),
        ("auth = { kind = \"header\", name = \"bad header\", token_env = \"T\" }", "sources.wiw.auth.name"),
        ("auth = { kind = \"basic\", username_env = \"U\" }", "password_env"),
        ("auth = { kind = \"query\", token_env = \"T\" }", "name"),
        ("auth = { kind = \"oauth2_client_credentials\", token_url = \"https://x/token\", client_id_env = \"I\" }", "client_secret_env"),
        (
            "auth = { kind = \"oauth2_refresh_token\", token_url = \"https://x/token\", client_id_env = \"I\", client_secret_env = \"S\" }",
            "refresh_token_env",
        ),
        (
            "auth = { kind = \"oauth2_client_credentials\", token_url = \"not a url\", client_id_env = \"I\", client_secret_env = \"S\" }",
            "sources.wiw.auth.token_url",
        ),
        ("auth = { kind = \"password\" }", "unknown variant `password`"),
        ("auth = { url = \"ftp://x/login\" }", "sources.wiw.auth.url"),
        ("auth = { lifetime_secs = 0 }", "sources.wiw.auth.lifetime_secs"),
        ("auth = { token_path = \"$$\" }", "'$$' is not a path"),
        ("paginator = { kind = \"pages\" }", "unknown variant `pages`"),
        ("paginator = { kind = \"offset\", limit = 0 }", "sources.wiw.paginator.limit"),
        ("paginator = { kind = \"cursor\" }", "cursor_path"),
        ("paginator = { kind = \"next_url\", next_path = \"links next\" }", "'links next' is not a path"),
        ("headers = { \"W-UserId\" = \"a\\nb\" }", "sources.wiw.headers.W-UserId"),
        ("start_param = \"end\"", "start_param and end_param"),
    ];
    for (line, expected) in cases {
        let text = if line.starts_with("auth = {") && !line.contains("kind") {
            // a field of the preset's auth table, set again
            format!("{base}[sources.auth]\n{}\n", line.trim_start_matches("auth = { ").trim_end_matches(" }"))
        } else if line.starts_with("preset") {
            base.replace("preset = \"wheniwork\"", line)
        } else {
            format!("{base}{line}\n")
        };
        assert_check_refuses(&config_file(dir.path(), &text), &secrets, line, expected);
    }
}

/// The Tiki preset's own fields refuse a wrong value at `check` the same
/// way: one line naming the field (a seller's token fields laid over
/// `seller_auth`, enrichment, acknowledgement, paths).
#[test]
fn check_names_the_event_queue_field_that_is_wrong() {
    let dir = tempdir();
    let base = "[database]\nurl = \"sqlite://DB\"\n[[sources]]\nname = \"tiki\"\npreset = \"tiki\"\n";
    let seller = "[sources.sellers.969BEA7515A1A27FF4F456C782653F854E6B5D2D]\nrefresh_token_env = \"SELLER_A\"\n";
    let secrets = [("TIKI_CLIENT_ID", "i"), ("TIKI_CLIENT_SECRET", "s"), ("SELLER_A", "rt")];
    let good = config_file(dir.path(), &format!("{base}{seller}"));
    let (code, stdout, stderr) = tributary(&["check", "--config", &good], &secrets);
    assert_eq!(code, 0, "the preset and a seller are a good config: {stderr}");
    assert!(stdout.contains("config ok"), "{stdout}");
    let (code, _, stderr) = tributary(&["check", "--config", &good], &secrets[..2]);
    assert_eq!(code, 1);
    assert!(stderr.contains("SELLER_A") && stderr.contains("sources.tiki.sellers.969BEA7515A1A27FF4F456C782653F854E6B5D2D"), "{stderr}");

    let cases = [
        ("sellers = { S1 = { } }", "sources.tiki.sellers.S1", "refresh_token_env"),
        ("sellers = { S1 = { refresh_token_env = \"\" } }", "", "sources.tiki.sellers.S1.refresh_token_env"),
        ("sellers = { S1 = { refresh_token_env = \"X\", token_url = \"nope\" } }", "", "sources.tiki.sellers.S1.token_url"),
        (
            "sellers = { S1 = { refresh_token_file = \"/nonexistent/token\" } }",
            "",
            "sources.tiki.sellers.S1.refresh_token_file: cannot read",
        ),
        (
            "sellers = { S1 = { refresh_token_file = \"/t\", refresh_token_env = \"X\" } }",
            "",
            "name one of refresh_token_env and refresh_token_file",
        ),
        ("accounts = [\"a\"]", "sellers", "accounts and sellers"),
        ("ack_path = \"queues/{code}/ack\"", "sellers", "ack_path 'queues/{code}/ack' must start with /"),
        ("fetch_attempts = 0", "sellers", "fetch_attempts must be at least 1"),
        (
            "objects = { \"ORDER_*\" = { fetch = \"/orders\" } }",
            "sellers",
            "objects.ORDER_*.fetch '/orders' must start with / and hold {id}",
        ),
        ("objects = { \"ORDER_*\" = { fetch_path = \"a b\" } }", "sellers", "'a b' is not a path"),
        ("account_path = \"s id\"", "sellers", "'s id' is not a path"),
        ("created_at_format = \"epoch\"", "sellers", "unknown time format 'epoch'"),
        ("batch_size = 0", "sellers", "batch_size must be 1 to 500"),
        ("seller_auth = { kind = \"header\", name = \"X-Token\" }", "sellers", "token_env"),
    ];
    for (line, with_seller, expected) in cases {
        let text = if with_seller == "sellers" { format!("{base}{line}\n{seller}") } else { format!("{base}{line}\n") };
        let stderr =
            assert_check_refuses(&config_file(dir.path(), &text), &[("X", "x"), secrets[0], secrets[1], secrets[2]], line, expected);
        if with_seller.starts_with("sources.") {
            assert!(stderr.contains(with_seller), "{line}: '{with_seller}' not in: {stderr}");
        }
    }
}

/// A `rest` source's fields refuse a wrong value at `check` the same way.
#[test]
fn check_names_the_rest_field_that_is_wrong() {
    let dir = tempdir();
    let base = "[database]\nurl = \"sqlite://DB\"\n[[sources]]\nname = \"gh\"\nkind = \"rest\"\nbase_url = \"https://api.example.com\"\n\
                auth = { kind = \"bearer\", token_env = \"GH\" }\n";
    let repo = "[[sources.resources]]\nname = \"repo\"\npath = \"/orgs/acme/repos\"\n";
    let issue = "[[sources.resources]]\nname = \"issue\"\npath = \"/repos/{owner}/{repo}/issues\"\nparent = \"repo\"\n\
                 params = { owner = \"owner.login\", repo = \"name\" }\n";
    let secrets = [("GH", "t")];
    let good = config_file(dir.path(), &format!("{base}{repo}{issue}"));
    let (code, stdout, stderr) = tributary(&["check", "--config", &good], &secrets);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("config ok"), "{stdout}");
    let (code, _, stderr) = tributary(&["check", "--config", &good], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("GH") && stderr.contains("sources.gh.auth.token_env"), "{stderr}");

    let cases = [
        (format!("{base}resources = []\n"), "resources must declare at least one list"),
        (format!("{base}{issue}{repo}"), "resources.issue.parent 'repo' must name a resource declared before it"),
        (format!("{base}{repo}{repo}"), "resources.repo: declared twice"),
        (format!("{base}{repo}{}", issue.replace(", repo = \"name\"", "")), "resources.issue.params must name each placeholder"),
        (format!("{base}{repo}path2 = 1\n"), "unknown field `path2`"),
        (format!("{base}{}", repo.replace("/orgs", "orgs")), "resources.repo.path 'orgs/acme/repos' must start with /"),
        (format!("{base}{}", repo.replace("\"repo\"", "\"bad name\"")), "resources.bad name"),
        (format!("{base}{repo}id_path = \"a b\"\n"), "'a b' is not a path"),
        (format!("{base}{repo}paginator = {{ kind = \"cursor\" }}\n"), "cursor_path"),
        (
            format!("{base}{repo}incremental = {{ param = \"since\", field = \"updated_at\", format = \"iso\" }}\n"),
            "unknown time format 'iso'",
        ),
        (
            format!("{base}{repo}incremental = {{ param = \"\", field = \"updated_at\" }}\n"),
            "resources.repo.incremental.param must not be empty",
        ),
        (format!("{base}full_refresh_every_secs = 0\n{repo}"), "full_refresh_every_secs must be above 0"),
    ];
    for (text, expected) in cases {
        assert_check_refuses(&config_file(dir.path(), &text), &secrets, &text, expected);
    }
}
