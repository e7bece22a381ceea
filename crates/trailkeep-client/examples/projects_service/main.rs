//! An example service audited by Trailkeep: a small projects/applications API (see `app.rs`).
//!
//! ```sh
//! TRAILKEEP_URL=http://127.0.0.1:7700 TRAILKEEP_KEY=tk_… \
//!   cargo run -p trailkeep-client --example projects_service
//! curl -s localhost:8080/projects -H 'Authorization: Bearer alice-token' \
//!   -H 'Content-Type: application/json' -d '{"name": "alpha"}'
//! ```
//!
//! Environment: `TRAILKEEP_URL` (default `http://127.0.0.1:7700`), `TRAILKEEP_KEY` (required),
//! `LISTEN` (default `127.0.0.1:8080`), `SPOOL_DIR` (default `./audit-spool`).

mod app;

use std::net::SocketAddr;

use trailkeep_client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TRAILKEEP_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into());
    let key = std::env::var("TRAILKEEP_KEY").map_err(|_| "set TRAILKEEP_KEY to a writer key")?;
    let listen: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let spool = std::env::var("SPOOL_DIR").unwrap_or_else(|_| "./audit-spool".into());

    let client = Client::builder(&url, key).spool_dir(spool).build()?;
    let app = app::router(client.clone());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("projects service listening on http://{listen}, auditing to {url}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    // Send what is queued; whatever Trailkeep cannot take now stays in the spool for next time.
    let report = client.shutdown().await?;
    if report.spool_backlog {
        eprintln!("some audit events wait in the spool; they are sent at the next start");
    }
    Ok(())
}
