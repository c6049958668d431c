//! Running the PostgreSQL client tools (pg_dump, pg_restore, psql): stderr
//! is collected from the start, so a chatty tool cannot block on a full
//! pipe, an unsuccessful exit becomes an error quoting it, and a tool never
//! outlives the agent (killed on drop, and by the kernel if the agent dies).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::{Error, StoreArgs};

pub struct Tool {
    name: &'static str,
    child: Child,
    stderr: JoinHandle<String>,
}

impl Tool {
    /// Starts `name` with `args`, on the database at `database_url` if
    /// given: its password goes in the tool's environment (`PGPASSWORD`),
    /// never on its command line, which every process of the pod can read.
    pub fn spawn(
        store: &StoreArgs,
        name: &'static str,
        args: &[String],
        database_url: Option<&str>,
        stdin: bool,
        stdout: bool,
    ) -> Result<Tool, Error> {
        let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
        let mut command = Command::new(store.tool(name));
        command.args(args).env_remove("PGPASSWORD");
        if let Some(url) = database_url {
            let (dbname, password) = without_password(url)?;
            command.arg(format!("--dbname={dbname}"));
            if let Some(password) = password {
                command.env("PGPASSWORD", password);
            }
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // Killed with the agent, even by SIGKILL: psql must never
                // outlive it (and so never see a COMMIT it did not send).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .stdin(piped(stdin))
            .stdout(piped(stdout))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Io("starting the PostgreSQL client tools", e))?;
        let mut pipe = child.stderr.take();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            if let Some(p) = pipe.as_mut() {
                let _ = p.read_to_string(&mut text).await;
            }
            text.trim().to_owned()
        });
        Ok(Tool {
            name,
            child,
            stderr,
        })
    }

    fn closed(what: &'static str) -> Error {
        Error::Io(what, std::io::ErrorKind::BrokenPipe.into())
    }

    pub fn stdin(&mut self) -> Result<ChildStdin, Error> {
        self.child.stdin.take().ok_or(Self::closed("tool stdin"))
    }

    pub fn stdout(&mut self) -> Result<ChildStdout, Error> {
        self.child.stdout.take().ok_or(Self::closed("tool stdout"))
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops the tool after `cause` broke the pipeline. A tool that had
    /// already stopped on an error of its own (psql with ON_ERROR_STOP) is
    /// the better explanation: its stderr is returned instead.
    pub async fn stop(mut self, cause: Error) -> Error {
        let exited =
            tokio::time::timeout(std::time::Duration::from_millis(200), self.child.wait()).await;
        match exited {
            Ok(Ok(status)) if !status.success() => Error::Tool {
                tool: self.name.to_owned(),
                status: status.to_string(),
                stderr: self.stderr.await.unwrap_or_default(),
            },
            _ => {
                let _ = self.child.kill().await;
                cause
            }
        }
    }

    /// Waits for the tool; anything but success is `Error::Tool` with its stderr.
    pub async fn finish(mut self) -> Result<(), Error> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::Io("waiting for the PostgreSQL client tools", e))?;
        let stderr = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(Error::Tool {
                tool: self.name.to_owned(),
                status: status.to_string(),
                stderr,
            })
        }
    }
}

/// `url` without its password (in the user part or as a `password`
/// parameter), and the password, decoded.
pub fn without_password(url: &str) -> Result<(String, Option<String>), Error> {
    let mut url = url::Url::parse(url)?;
    let mut password = url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    // The scheme is postgres(ql)://, which always has a password slot.
    let _ = url.set_password(None);
    if url.query_pairs().any(|(k, _)| k == "password") {
        let rest: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| {
                if k == "password" {
                    password = Some(v.into_owned());
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        url.set_query(None);
        if !rest.is_empty() {
            url.query_pairs_mut().extend_pairs(rest);
        }
    }
    Ok((url.to_string(), password))
}

/// The bin directory of the client tools for a server of `server_major`.
/// `pg_bin` names either one bin directory (used as it is) or a directory of
/// majors laid out as `<major>/bin` (Debian's `/usr/lib/postgresql`, and the
/// operator image, which carries several majors): then the server's own major
/// is taken, else the oldest newer one. Unset: `/usr/lib/postgresql` when it
/// exists, else PATH.
pub fn choose_bin(pg_bin: Option<&Path>, server_major: u32) -> Result<Option<PathBuf>, Error> {
    let root = match pg_bin {
        Some(dir) if dir.join("pg_dump").exists() => return Ok(Some(dir.to_path_buf())),
        Some(dir) => dir.to_path_buf(),
        None => {
            let debian = Path::new("/usr/lib/postgresql");
            if !debian.is_dir() {
                return Ok(None);
            }
            debian.to_path_buf()
        }
    };
    let mut majors: Vec<u32> = std::fs::read_dir(&root)
        .map_err(|e| Error::Io("listing the PostgreSQL client tools", e))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|m: &u32| root.join(m.to_string()).join("bin/pg_dump").exists())
        .collect();
    majors.sort_unstable();
    let pick = majors
        .iter()
        .find(|m| **m == server_major)
        .or_else(|| majors.iter().find(|m| **m > server_major));
    match pick {
        Some(m) => Ok(Some(root.join(m.to_string()).join("bin"))),
        None => Err(Error::Tool {
            tool: "pg_dump".into(),
            status: "not found".into(),
            stderr: format!(
                "no client tools for PostgreSQL {server_major} or newer under {} (found {majors:?})",
                root.display()
            ),
        }),
    }
}

/// Statements newer pg_restore versions write that an older server refuses,
/// by the first server major that knows them.
const NEWER_SETTINGS: &[(&str, u32)] = &[("SET transaction_timeout = 0;", 17)];

/// The lines to drop from pg_restore's SQL for a server of `server_major`.
pub fn unsupported_lines(server_major: u32) -> Vec<&'static str> {
    NEWER_SETTINGS
        .iter()
        .filter(|(_, since)| server_major < *since)
        .map(|(line, _)| *line)
        .collect()
}

/// Copies pg_restore's SQL to psql, dropping the `drop` lines from its
/// preamble (everything before the first COPY, which is where session
/// settings are written); the rest, data included, passes untouched.
pub async fn copy_sql<R, W>(from: R, to: &mut W, drop: &[&str]) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut reader = tokio::io::BufReader::new(from);
    let mut copied = 0u64;
    if !drop.is_empty() {
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(copied);
            }
            let text = line.trim_end();
            if !drop.contains(&text) {
                to.write_all(line.as_bytes()).await?;
                copied += line.len() as u64;
            }
            if text.starts_with("COPY ") {
                break;
            }
        }
    }
    Ok(copied + tokio::io::copy(&mut reader, to).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_leaves_the_url_from_either_place() {
        let (url, password) =
            without_password("postgres://app:p%40ss%2Fw@db.ns.svc:5432/foodapp?sslmode=require")
                .unwrap();
        assert_eq!(url, "postgres://app@db.ns.svc:5432/foodapp?sslmode=require");
        assert_eq!(password.as_deref(), Some("p@ss/w"));
        let (url, password) =
            without_password("postgresql://app@h/db?password=s%26cret&sslmode=verify-full")
                .unwrap();
        assert_eq!(url, "postgresql://app@h/db?sslmode=verify-full");
        assert_eq!(password.as_deref(), Some("s&cret"));
        let (url, password) = without_password("postgres://app@h/db").unwrap();
        assert_eq!((url.as_str(), password), ("postgres://app@h/db", None));
        assert!(without_password("host=h password=x").is_err());
    }

    /// The tool sees the password in its environment and nowhere in its
    /// arguments (a stand-in `psql` prints both).
    #[tokio::test]
    async fn a_tool_gets_the_password_by_environment_never_by_argument() {
        use std::os::unix::fs::PermissionsExt;
        let bin = std::env::temp_dir().join(format!("argv-{}", std::process::id()));
        std::fs::create_dir_all(&bin).unwrap();
        let psql = bin.join("psql");
        std::fs::write(
            &psql,
            "#!/bin/sh\necho \"args: $*\"\necho \"env: $PGPASSWORD\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&psql, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = StoreArgs {
            database_url: String::new(),
            s3_endpoint: None,
            s3_region: String::new(),
            s3_bucket: String::new(),
            s3_prefix: String::new(),
            s3_force_path_style: true,
            s3_checksums: super::super::Checksums::WhenRequired,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            foodapp: String::new(),
            namespace: String::new(),
            pg_bin: Some(bin.clone()),
        };
        let url = "postgres://app:Secret-9f2@db:5432/foodapp";
        let mut tool =
            Tool::spawn(&store, "psql", &["-X".to_owned()], Some(url), false, true).unwrap();
        let mut out = String::new();
        tool.stdout()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        tool.finish().await.unwrap();
        std::fs::remove_dir_all(&bin).unwrap();
        assert_eq!(
            out,
            "args: -X --dbname=postgres://app@db:5432/foodapp\nenv: Secret-9f2\n"
        );
    }

    #[tokio::test]
    async fn settings_an_older_server_refuses_are_dropped_from_the_preamble_only() {
        let sql = "SET statement_timeout = 0;\nSET transaction_timeout = 0;\nCOPY t (a) FROM stdin;\nSET transaction_timeout = 0;\n\\.\n";
        let mut out = Vec::new();
        copy_sql(sql.as_bytes(), &mut out, &unsupported_lines(15))
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SET statement_timeout = 0;\nCOPY t (a) FROM stdin;\nSET transaction_timeout = 0;\n\\.\n",
            "data rows are never touched"
        );
        assert!(unsupported_lines(17).is_empty());
        let mut same = Vec::new();
        copy_sql(sql.as_bytes(), &mut same, &[]).await.unwrap();
        assert_eq!(same, sql.as_bytes());
    }

    #[test]
    fn tools_of_the_servers_major_are_chosen_else_the_oldest_newer_ones() {
        let root = std::env::temp_dir().join(format!("pgbin-{}", std::process::id()));
        for m in ["13", "15", "18"] {
            let bin = root.join(m).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("pg_dump"), "").unwrap();
        }
        let chosen = |server| choose_bin(Some(&root), server).unwrap().unwrap();
        assert_eq!(chosen(15), root.join("15/bin"));
        assert_eq!(chosen(14), root.join("15/bin"));
        assert_eq!(chosen(16), root.join("18/bin"));
        assert!(choose_bin(Some(&root), 19).is_err(), "never older tools");
        assert_eq!(
            choose_bin(Some(&root.join("13/bin")), 18).unwrap().unwrap(),
            root.join("13/bin"),
            "a bin directory given is used as it is"
        );
        std::fs::remove_dir_all(root).ok();
    }
}
