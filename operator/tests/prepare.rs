//! The built-in database's start script (`build::postgres::PREPARE`) run
//! against real PostgreSQL 15 binaries, as the StatefulSet's init container
//! runs it: on a new data directory, and on one made by the previous
//! version, whose API login was the superuser. Either way the API's login
//! owns its database and schema, is not a superuser, and logs in with the
//! Secret's password; `postgres` logs in only over the local socket.

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
        let bin = PathBuf::from(
            std::env::var("PG15_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
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
            as_postgres(
                "sh",
                &["-c", foodapp_operator::build::postgres::PREPARE],
                &self.env(),
            ),
            "the prepare script",
        )
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
