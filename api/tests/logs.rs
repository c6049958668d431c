//! Logs, in a test binary of their own: tracing's dispatch state is
//! process-wide, so no other test may log or create spans meanwhile.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use serde_json::json;

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_log_line_written_during_a_request_names_its_method_path_and_request_id() {
    let app = TestApp::new().await;
    let logs = Capture::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(foodapp_api::telemetry::json_logs(
        tracing_subscriber::EnvFilter::new("warn"),
        move || writer.clone(),
    ));
    let email = "logged@foodapp.io";
    let r = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "name": "Logged", "password": "long enough"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let login = app
        .post(
            "/api/v1/auth/token",
            None,
            json!({"email": email, "password": "long enough"}),
        )
        .await;
    let refresh = json!({"refresh_token": login.body["refresh_token"]});
    app.post("/api/v1/auth/refresh", None, refresh.clone())
        .await;
    // Reusing the token logs a warning inside the request.
    let reused = app
        .call_with(
            axum::http::Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(refresh),
            &[("x-request-id", "trace-me-42")],
        )
        .await;
    assert_eq!(reused.code(), "refresh_token_reused");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("refresh token reused"))
        .unwrap_or_else(|| panic!("no warning logged:\n{text}"));
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["span"]["method"], "POST", "{line}");
    assert_eq!(entry["span"]["path"], "/api/v1/auth/refresh", "{line}");
    assert_eq!(entry["span"]["request_id"], "trace-me-42", "{line}");
}
