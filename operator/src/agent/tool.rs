//! Running the PostgreSQL client tools (pg_dump, pg_restore, psql): stderr
//! is collected from the start, so a chatty tool cannot block on a full
//! pipe, and an unsuccessful exit becomes an error quoting it.

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
    pub fn spawn(
        store: &StoreArgs,
        name: &'static str,
        args: &[String],
        stdin: bool,
        stdout: bool,
    ) -> Result<Tool, Error> {
        let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
        let mut child = Command::new(store.tool(name))
            .args(args)
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
