//! The built-in database's start script (`build::postgres::PREPARE`) run
//! against real PostgreSQL 15 binaries, as the StatefulSet's init container
//! runs it: on a new data directory, and on one made by the previous
//! version, whose API login was the superuser. Either way the API's login
//! owns its database and schema, is not a superuser, and logs in with the
//! Secret's password; `postgres` logs in only over the local socket.
//!
//! And the InPlace PostgreSQL major upgrade (`build::upgrade`): a populated
//! PostgreSQL 15 data directory made by `prepare`, the old binaries copied
//! out by the init container's script, then the upgrade script with
//! PostgreSQL 18 (`PG18_BIN`, from `scripts/test-services`) — every row
//! there afterwards, the login unchanged, the major reported; a failing
//! `pg_upgrade --check` leaves the old directory as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, PgConnection};

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program args` as the postgres user when we are root, with `env`.
fn as_postgres(program: &str, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut c = if root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "env"]);
        c
    } else {
        Command::new("env")
    };
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(program).args(args);
    c
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}:\n{text}");
    text
}

struct Data {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Data {
    fn new(name: &str) -> Data {
        let bin = pg15_bin();
        let base = std::env::var("FOODAPP_RUN_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
        let dir = PathBuf::from(base).join(format!("prepare-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&dir);
                    c
                },
                "chown",
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        Data { dir, bin, port }
    }

    fn pgdata(&self) -> String {
        self.dir.join("pgdata").display().to_string()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGDATA", self.pgdata()),
            ("PATH", format!("{}:/usr/bin:/bin", self.bin.display())),
            ("APP_USER", "foodapp".into()),
            ("APP_PASSWORD", "s3cret-from-the-secret".into()),
            ("APP_DATABASE", "foodapp".into()),
            ("TMPDIR", self.dir.display().to_string()),
        ]
    }

    fn prepare(&self) -> String {
        run(
            self.script(foodapp_operator::build::postgres::PREPARE),
            "the prepare script",
        )
    }

    /// `script` as the containers run it, with this directory's binaries
    /// first on PATH, the old binaries under `old/` and the termination
    /// message in `termination-log`.
    fn script(&self, script: &str) -> Command {
        let mut env = self.env();
        env.push(("OLD", self.dir.join("old").display().to_string()));
        env.push((
            "TERMINATION_LOG",
            self.dir.join("termination-log").display().to_string(),
        ));
        env.push(("TO_MAJOR", "18".to_owned()));
        as_postgres("sh", &["-c", script], &env)
    }

    fn termination_message(&self) -> String {
        std::fs::read_to_string(self.dir.join("termination-log")).unwrap_or_default()
    }

    fn major(&self) -> String {
        std::fs::read_to_string(Path::new(&self.pgdata()).join("PG_VERSION"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let log = self.dir.join("server.log").display().to_string();
        let mut all = vec!["-D".to_owned(), self.pgdata(), "-l".to_owned(), log];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        as_postgres(&self.bin.join("pg_ctl").display().to_string(), &all, &[])
    }

    /// The server as the main container runs it: listening on TCP.
    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        run(
            self.pg_ctl(&["-w", "-t", "30", "start", "-o", &options]),
            "start",
        );
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/foodapp?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn check_login(data: &Data) {
    let mut app = PgConnection::connect(&data.url("foodapp", "s3cret-from-the-secret"))
        .await
        .expect("the API's login works with the Secret's password");
    let (superuser, createdb): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut app)
            .await
            .unwrap();
    assert!(!superuser, "the API's login is not a superuser");
    assert!(createdb, "backup verification creates scratch databases");
    let owners: (String, String) = sqlx::query_as(
        "SELECT pg_get_userbyid(d.datdba), pg_get_userbyid(n.nspowner)
         FROM pg_database d, pg_namespace n
         WHERE d.datname = current_database() AND n.nspname = 'public'",
    )
    .fetch_one(&mut app)
    .await
    .unwrap();
    assert_eq!(owners, ("foodapp".to_owned(), "foodapp".to_owned()));
    sqlx::query("CREATE TABLE IF NOT EXISTS t (id int)")
        .execute(&mut app)
        .await
        .expect("the login creates tables in its schema");
    app.close().await.ok();
    assert!(
        PgConnection::connect(&data.url("postgres", ""))
            .await
            .is_err(),
        "the superuser has no password: it logs in over the pod's socket only"
    );
}

fn stop(data: &Data) {
    run(data.pg_ctl(&["-w", "-m", "fast", "stop"]), "stop");
}

#[tokio::test]
async fn a_new_data_directory_gets_a_login_that_owns_its_schema_but_is_no_superuser() {
    let data = Data::new("new");
    data.prepare();
    assert!(Path::new(&data.pgdata()).join("PG_VERSION").exists());
    data.start();
    check_login(&data).await;
    stop(&data);
    // Every start runs it again: nothing changes, the data stays.
    data.prepare();
    data.start();
    check_login(&data).await;
}

#[tokio::test]
async fn a_data_directory_whose_login_was_the_superuser_is_brought_in_line() {
    let data = Data::new("legacy");
    // What the previous version's entrypoint made: the login is the
    // bootstrap superuser, with a table of its own.
    let pwfile = data.dir.join("pw");
    std::fs::write(&pwfile, "old-password\n").unwrap();
    if root() {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres").arg(&pwfile);
                c
            },
            "chown",
        );
    }
    run(
        as_postgres(
            &data.bin.join("initdb").display().to_string(),
            &[
                "-D",
                &data.pgdata(),
                "--username=foodapp",
                &format!("--pwfile={}", pwfile.display()),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            &[],
        ),
        "initdb as the old entrypoint",
    );
    std::fs::write(
        Path::new(&data.pgdata()).join("pg_hba.conf"),
        "local all all trust\nhost all all all scram-sha-256\n",
    )
    .unwrap();
    data.start();
    let mut old = PgConnection::connect(
        &data
            .url("foodapp", "old-password")
            .replace("/foodapp?", "/postgres?"),
    )
    .await
    .unwrap();
    sqlx::query("CREATE DATABASE foodapp")
        .execute(&mut old)
        .await
        .unwrap();
    old.close().await.ok();
    let mut old = PgConnection::connect(&data.url("foodapp", "old-password"))
        .await
        .unwrap();
    for sql in [
        "CREATE TABLE orders (id int)",
        "INSERT INTO orders VALUES (1), (2)",
    ] {
        sqlx::query(sql).execute(&mut old).await.unwrap();
    }
    old.close().await.ok();
    stop(&data);

    data.prepare();
    data.start();
    check_login(&data).await;
    let mut app = PgConnection::connect(&data.url("foodapp", "s3cret-from-the-secret"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(n, 2, "the data is untouched");
}

fn pg15_bin() -> PathBuf {
    PathBuf::from(std::env::var("PG15_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()))
}

fn pg18_bin() -> PathBuf {
    PathBuf::from(
        std::env::var("PG18_BIN")
            .expect("PG18_BIN: PostgreSQL 18's bin directory (scripts/test-services run sets it)"),
    )
}

/// Tables of several kinds, with a checksum of each to compare after.
const POPULATE: &[&str] = &[
    "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(10,2), placed_at timestamptz DEFAULT now(), lines jsonb)",
    "INSERT INTO orders (customer, total, lines) SELECT 'customer ' || i, i * 1.25, jsonb_build_array(jsonb_build_object('item', i % 17, 'qty', i % 5 + 1)) FROM generate_series(1, 20000) i",
    "CREATE INDEX orders_customer ON orders (customer)",
    "CREATE TABLE notes (id int PRIMARY KEY, body text)",
    "INSERT INTO notes SELECT i, repeat('é', 5000) FROM generate_series(1, 50) i",
    "CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100",
    "CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM orders'",
];

const CHECKSUMS: &str = "SELECT (SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o) || '/' || (SELECT md5(string_agg(n::text, ',' ORDER BY id)) FROM notes n) || '/' || (SELECT count(*) FROM big_orders) || '/' || order_count()";

async fn populate(data: &Data) -> String {
    let mut app = PgConnection::connect(&data.url("foodapp", "s3cret-from-the-secret"))
        .await
        .unwrap();
    for sql in POPULATE {
        sqlx::query(*sql).execute(&mut app).await.unwrap();
    }
    let sums: String = sqlx::query_scalar(CHECKSUMS)
        .fetch_one(&mut app)
        .await
        .unwrap();
    app.close().await.ok();
    sums
}

#[tokio::test]
async fn the_in_place_upgrade_brings_a_populated_15_directory_to_18_with_every_row() {
    use foodapp_operator::build::upgrade::{COPY_OLD_BINARIES, UPGRADE};
    let mut data = Data::new("upgrade");
    data.prepare();
    assert_eq!(data.termination_message(), "PG_VERSION=15\n");
    data.start();
    let before = populate(&data).await;
    // The database pod is stopped first (a fast stop, as Kubernetes does).
    stop(&data);

    // The init container, in the old image.
    let copied = run(data.script(COPY_OLD_BINARIES), "the old image's copy");
    assert!(copied.contains("copied PostgreSQL 15"), "{copied}");
    // The Job's container, in the new image.
    data.bin = pg18_bin();
    let out = run(data.script(UPGRADE), "the upgrade script");
    assert!(out.contains("pg_upgrade --check passed"), "{out}");
    assert_eq!(data.major(), "18");
    assert_eq!(
        data.termination_message(),
        "PG_VERSION=18\nupgraded from 15\n"
    );
    let top = data.dir.clone();
    let left: Vec<String> = std::fs::read_dir(&top)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("pgdata"))
        .collect();
    assert_eq!(
        left,
        vec!["pgdata".to_owned()],
        "old and new directories are gone"
    );

    // The database pod of the new image: prepare, then the server.
    let prepared = data.prepare();
    assert!(prepared.contains("is not a superuser"), "{prepared}");
    assert_eq!(data.termination_message(), "PG_VERSION=18\n");
    data.start();
    check_login(&data).await;
    let mut app = PgConnection::connect(&data.url("foodapp", "s3cret-from-the-secret"))
        .await
        .unwrap();
    let after: String = sqlx::query_scalar(CHECKSUMS)
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(after, before, "every row, view and function is there");
    let version: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert!(version.starts_with("18"), "{version}");
    app.close().await.ok();
    stop(&data);

    // Run again (a Job killed after it finished): nothing to do.
    let again = run(data.script(UPGRADE), "the upgrade script again");
    assert!(again.contains("PostgreSQL 18 already"), "{again}");

    // An image of the old major on the upgraded data: prepare refuses
    // before the server touches it, and says what the data is.
    data.bin = pg15_bin();
    let out = data
        .script(foodapp_operator::build::postgres::PREPARE)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the data directory is PostgreSQL 18"),
        "{said}"
    );
    assert_eq!(data.termination_message(), "PG_VERSION=18\n");
    assert_eq!(data.major(), "18");
    data.bin = pg18_bin();
}

/// Stops the populated 15 server, runs the upgrade to 18, which must refuse
/// (exit 5) with nothing changed: its termination message, then the 15
/// server starting on the data with every row as it was (`before`).
async fn refused_with_nothing_changed(data: &mut Data, before: &str) -> String {
    use foodapp_operator::build::upgrade::{COPY_OLD_BINARIES, UPGRADE};
    stop(data);
    run(data.script(COPY_OLD_BINARIES), "the old image's copy");
    data.bin = pg18_bin();
    let out = data.script(UPGRADE).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{said}");
    let message = data.termination_message();
    assert_eq!(data.major(), "15");
    assert!(!data.dir.join("pgdata-18.new").exists());
    // The old server starts on it, as it was.
    data.bin = pg15_bin();
    data.prepare();
    data.start();
    let mut app = PgConnection::connect(&data.url("foodapp", "s3cret-from-the-secret"))
        .await
        .unwrap();
    let after: String = sqlx::query_scalar(CHECKSUMS)
        .fetch_one(&mut app)
        .await
        .unwrap();
    assert_eq!(after, before);
    app.close().await.ok();
    message
}

#[tokio::test]
async fn a_failing_upgrade_check_leaves_the_old_directory_as_it_was() {
    let mut data = Data::new("upgrade-check");
    data.prepare();
    data.start();
    let before = populate(&data).await;
    let mut app = PgConnection::connect(&data.url("foodapp", "s3cret-from-the-secret"))
        .await
        .unwrap();
    // pg_upgrade cannot carry reg* types other than regclass, regrole and
    // regtype in user tables: its --check refuses them.
    for sql in [
        "CREATE TABLE handlers (f regproc)",
        "INSERT INTO handlers VALUES ('now')",
    ] {
        sqlx::query(sql).execute(&mut app).await.unwrap();
    }
    app.close().await.ok();
    let message = refused_with_nothing_changed(&mut data, &before).await;
    assert!(
        message.starts_with("PG_VERSION=15\npg_upgrade --check refused the upgrade from 15 to 18 (nothing was changed)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_column_option_the_new_server_does_not_know_is_refused_before_anything_changes() {
    let mut data = Data::new("upgrade-options");
    data.prepare();
    data.start();
    let before = populate(&data).await;
    // As a distributor's build of the old major does (Debian's 15.20 sets
    // pg_attver on every column), written here by the superuser.
    let url = format!(
        "postgres://postgres@localhost:{}/foodapp?host={}",
        data.port,
        data.dir.display()
    );
    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE pg_attribute SET attoptions = '{pg_attver=22158912}' WHERE attrelid = 'notes'::regclass AND attnum > 0")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
    let message = refused_with_nothing_changed(&mut data, &before).await;
    assert!(
        message.contains("does not know the column option(s) pg_attver")
            && message.contains("nothing was changed"),
        "{message}"
    );
}
